import net from 'node:net';
import { SocksClient } from 'socks';
import { ErrorCode, PortsideError, Result } from '../errors.js';

export interface FirewallSpec {
  host: string;
  port: number;
  username?: string;
  password?: string;
}

/**
 * Open a TCP connection to host:port, through a SOCKS5 firewall (RFC 1928 CONNECT,
 * RFC 1929 username/password) when one is given, else directly. Errors carry codes
 * that say whether the firewall refused, failed authentication, or was unreachable.
 */
export async function dial(host: string, port: number, firewall: FirewallSpec | undefined, timeoutMs: number): Promise<net.Socket> {
  if (!firewall) {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
      const t = setTimeout(() => { s.destroy(); reject(new PortsideError(ErrorCode.TIMEOUT, `connect to ${host}:${port} timed out`, Result.TIMEOUT)); }, timeoutMs);
      s.once('connect', () => { clearTimeout(t); resolve(s); });
      s.once('error', (err) => { clearTimeout(t); reject(new PortsideError(ErrorCode.CONNECT_FAILED, `connect to ${host}:${port}: ${err.message}`, Result.CONNECTION_REFUSED, { cause: err })); });
    });
  }
  try {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: firewall.host, port: firewall.port, type: 5, userId: firewall.username, password: firewall.password },
      command: 'connect',
      destination: { host, port },
      timeout: timeoutMs,
    });
    socket.setNoDelay(true);
    (socket as net.Socket & { allowHalfOpen: boolean }).allowHalfOpen = true;
    return socket;
  } catch (err) {
    const msg = (err as Error).message;
    const via = `firewall ${firewall.host}:${firewall.port}`;
    if (/Authentication failed|authentication/i.test(msg)) {
      throw new PortsideError(ErrorCode.FIREWALL_AUTH, `${via} refused our credentials: ${msg}`, Result.AUTH_FAILED, { cause: err });
    }
    // The firewall answered, but could not reach the outside relay beyond it.
    if (/proxy rejected connection - (ConnectionRefused|HostUnreachable|NetworkUnreachable|TTLExpired)/i.test(msg)) {
      throw new PortsideError(ErrorCode.CONNECT_FAILED, `${via} could not reach ${host}:${port}: ${msg}`, Result.CONNECTION_REFUSED, { cause: err });
    }
    if (/ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|timed out|Proxy connection timed out/i.test(msg)) {
      throw new PortsideError(ErrorCode.FIREWALL_UNREACHABLE, `${via} unreachable: ${msg}`, Result.NETWORK_UNREACHABLE, { cause: err });
    }
    throw new PortsideError(ErrorCode.FIREWALL_REFUSED, `${via} refused the connection to ${host}:${port}: ${msg}`, Result.NOT_ALLOWED, { cause: err });
  }
}
