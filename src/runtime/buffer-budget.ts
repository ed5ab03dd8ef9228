/**
 * One account of the bytes the daemon holds on behalf of calls that are not
 * its own to bound otherwise: stdin of executions waiting for a worker, and
 * streamed output a client has not taken yet. New work is refused once the
 * account is full; output already produced is always counted (a running guest
 * is stopped by its stream window, not by losing what it wrote).
 */
export class BufferBudget {
  private usedBytes = 0;

  constructor(readonly limitBytes: number) {}

  /** Bytes currently held. */
  get used(): number {
    return this.usedBytes;
  }

  /** Takes `bytes` if they fit under the limit; false (and nothing taken) otherwise. */
  tryAcquire(bytes: number): boolean {
    if (this.usedBytes + bytes > this.limitBytes) return false;
    this.usedBytes += bytes;
    return true;
  }

  /** Takes `bytes` whether or not they fit: for memory that already exists. */
  acquire(bytes: number): void {
    this.usedBytes += bytes;
  }

  /** Gives back what an acquire took. */
  release(bytes: number): void {
    this.usedBytes -= bytes;
  }
}
