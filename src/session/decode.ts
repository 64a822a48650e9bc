import { FrameTooLargeError, MalformedFrameError, UnknownCommandError } from '../errors.js';
import { FrameType, HEADER_SIZE, isKnownType, type Frame } from './frame.js';

const enum State { Header, Data, Control }

/**
 * Incremental frame decoder: feed it whatever the transport delivers, in any slices.
 *
 * DATA payloads are not reassembled: each piece is emitted as it arrives, as a DATA frame
 * carrying part of the payload (a view into the input, no copy). Control payloads are copies. The transport delivers
 * 16 KiB TLS records, so reassembling 256 KiB frames would copy every byte once more.
 * Control payloads are small and are reassembled. Memory held is at most one header plus
 * one control payload (bounded by maxFrame).
 */
export class FrameDecoder {
  private state = State.Header;
  private readonly hb = Buffer.alloc(HEADER_SIZE);
  private hbFill = 0;
  private type = 0;
  private flags = 0;
  private stream = 0;
  private remaining = 0;
  private ctrl: Buffer | null = null;
  private ctrlFill = 0;

  constructor(private readonly maxFrame: number) {}

  /**
   * Appends the frames (or DATA pieces) this chunk completes to `out`; throws a PortsideError on a
   * bad frame. `clear`: the chunk came outside the transport's sealing; it must lie wholly inside
   * one DATA frame's payload (its header came sealed).
   */
  push(chunk: Buffer, out: Frame[] = [], clear = false): Frame[] {
    if (clear) {
      if (this.state !== State.Data || chunk.length > this.remaining) throw new MalformedFrameError('clear bytes outside a DATA payload');
      out.push({ type: FrameType.DATA, flags: this.flags, stream: this.stream, payload: chunk, clear: true });
      this.remaining -= chunk.length;
      if (this.remaining === 0) this.state = State.Header;
      return out;
    }
    let off = 0;
    const end = chunk.length;
    while (off < end) {
      if (this.state === State.Header) {
        let h: Buffer;
        let ho: number;
        if (this.hbFill === 0 && end - off >= HEADER_SIZE) {
          h = chunk;
          ho = off;
          off += HEADER_SIZE;
        } else {
          const n = Math.min(HEADER_SIZE - this.hbFill, end - off);
          chunk.copy(this.hb, this.hbFill, off, off + n);
          this.hbFill += n;
          off += n;
          if (this.hbFill < HEADER_SIZE) break;
          this.hbFill = 0;
          h = this.hb;
          ho = 0;
        }
        this.header(h, ho, out);
        continue;
      }
      const n = Math.min(this.remaining, end - off);
      if (this.state === State.Data) {
        out.push({ type: FrameType.DATA, flags: this.flags, stream: this.stream, payload: chunk.subarray(off, off + n) });
        off += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = State.Header;
      } else {
        if (this.ctrlFill === 0 && n === this.remaining) {
          // A copy: the transport reuses its read buffers once the DATA views are written.
          out.push({ type: this.type, flags: this.flags, stream: this.stream, payload: Buffer.from(chunk.subarray(off, off + n)) });
        } else {
          if (!this.ctrl) this.ctrl = Buffer.allocUnsafe(this.remaining);
          chunk.copy(this.ctrl, this.ctrlFill, off, off + n);
          this.ctrlFill += n;
          if (n === this.remaining) {
            out.push({ type: this.type, flags: this.flags, stream: this.stream, payload: this.ctrl });
            this.ctrl = null;
            this.ctrlFill = 0;
          }
        }
        off += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = State.Header;
      }
    }
    return out;
  }

  private header(h: Buffer, o: number, out: Frame[]): void {
    const type = h[o];
    if (!isKnownType(type)) throw new UnknownCommandError(type);
    if (h[o + 2] !== 0 || h[o + 3] !== 0) throw new MalformedFrameError('reserved header bits set');
    const length = h.readUInt32BE(o + 8);
    if (length > this.maxFrame) throw new FrameTooLargeError(length, this.maxFrame);
    this.type = type;
    this.flags = h[o + 1];
    this.stream = h.readUInt32BE(o + 4);
    this.remaining = length;
    if (length === 0) {
      // An empty DATA frame carries nothing; every other command is complete.
      if (type !== FrameType.DATA) out.push({ type, flags: this.flags, stream: this.stream, payload: EMPTY });
      return;
    }
    this.state = type === FrameType.DATA ? State.Data : State.Control;
  }

  /** Bytes held inside the decoder (for memory-bound tests). */
  get held(): number {
    return this.hbFill + this.ctrlFill;
  }
}

const EMPTY = Buffer.alloc(0);

export function decodeAddress(payload: Buffer): { host: string; port: number } {
  if (payload.length < 3) throw new MalformedFrameError('address too short');
  const port = payload.readUInt16BE(0);
  const hl = payload[2];
  if (payload.length !== 3 + hl) throw new MalformedFrameError('address length mismatch');
  if (hl === 0) throw new MalformedFrameError('empty host');
  return { host: payload.toString('utf8', 3, 3 + hl), port };
}
