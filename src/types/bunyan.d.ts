declare module 'bunyan';
