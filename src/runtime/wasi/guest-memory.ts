import { Errno } from "./abi.js";
import { GuestErrno } from "./errno.js";
import type { Ptr } from "./types.js";

/** Bytes of one iovec/ciovec in guest memory: a u32 pointer and a u32 length. */
const IOVEC_SIZE = 8;

/**
 * A run of guest buffers named by an iovec array, each checked to lie in memory before any is used. Buffers
 * are read one at a time: an array of them let millions of empty iovecs exhaust the heap.
 */
export class GuestBuffers {
  constructor(
    private readonly view: DataView,
    /** All of guest memory. */
    readonly u8: Uint8Array,
    private readonly iovs: number,
    /** How many buffers. */
    readonly count: number,
    /** Sum of the lengths (a JS number: at most count * 4 GiB, exact well past any real memory). */
    readonly totalBytes: number,
  ) {}

  /** Where the i-th buffer starts in guest memory. */
  ptr(i: number): number {
    return this.view.getUint32(this.iovs + i * IOVEC_SIZE, true);
  }

  /** The i-th buffer's length. */
  len(i: number): number {
    return this.view.getUint32(this.iovs + i * IOVEC_SIZE + 4, true);
  }

  /** The i-th buffer, a view into guest memory. */
  at(i: number): Uint8Array {
    const ptr = this.ptr(i);
    return this.u8.subarray(ptr, ptr + this.len(i));
  }
}

/**
 * The one way the host touches guest memory. Every pointer and length it takes is a u32 (the import binding
 * converts each i32 argument once), every access is bounds-checked, and a pointer or buffer outside memory is
 * thrown as `GuestErrno(EFAULT)`: the guest's fault, answered as preview1 says, never a trap and never a write
 * at the wrong place (a typed-array offset would count back from the end). The import binding calls
 * refresh() as each host call starts: only the guest grows its memory, and never during a host call.
 */
export class GuestMemory {
  private memory: WebAssembly.Memory | undefined;
  private buffer: ArrayBuffer | undefined;
  private dataView = new DataView(new ArrayBuffer(0));
  private bytes = new Uint8Array(0);

  /** Serves `memory` (the instance's export) from now on. */
  attach(memory: WebAssembly.Memory): void {
    this.memory = memory;
    this.refresh();
  }

  /** All of guest memory, for a module that checks its own bounds (sandboxd_http_v1). */
  get u8(): Uint8Array {
    return this.bytes;
  }

  /** Throws EFAULT unless [ptr, ptr + len) lies inside memory. */
  check(ptr: Ptr, len: number): void {
    if (ptr + len > this.bytes.length) throw new GuestErrno(Errno.FAULT);
  }

  /**
   * A DataView of exactly [ptr, ptr + len), checked once: for loops over a guest array (poll_oneoff's
   * subscriptions), whose reads then cost no check each. Offsets are relative to `ptr`.
   */
  region(ptr: Ptr, len: number): DataView {
    this.check(ptr, len);
    return new DataView(this.bytes.buffer, ptr, len);
  }

  /** A checked view of [ptr, ptr + len): reads and writes go straight to guest memory. */
  slice(ptr: Ptr, len: number): Uint8Array {
    this.check(ptr, len);
    return this.bytes.subarray(ptr, ptr + len);
  }

  /** Copies `data` to `ptr` (checked as a whole first). */
  write(ptr: Ptr, data: Uint8Array): void {
    this.check(ptr, data.length);
    this.bytes.set(data, ptr);
  }

  /** Zeroes [ptr, ptr + len). */
  zero(ptr: Ptr, len: number): void {
    this.check(ptr, len);
    this.bytes.fill(0, ptr, ptr + len);
  }

  /** Writes a u8. */
  setU8(ptr: Ptr, value: number): void {
    this.check(ptr, 1);
    this.dataView.setUint8(ptr, value);
  }

  /** Writes a little-endian u16. */
  setU16(ptr: Ptr, value: number): void {
    this.check(ptr, 2);
    this.dataView.setUint16(ptr, value, true);
  }

  /** Writes a little-endian u32. */
  setU32(ptr: Ptr, value: number): void {
    this.check(ptr, 4);
    this.dataView.setUint32(ptr, value, true);
  }

  /** Writes a little-endian u64. */
  setU64(ptr: Ptr, value: bigint): void {
    this.check(ptr, 8);
    this.dataView.setBigUint64(ptr, value, true);
  }

  /**
   * The iovec array at `iovs`: the array and every buffer it names are checked before any is returned, so a
   * call fails with EFAULT before it reads, writes or consumes anything.
   */
  iovecs(iovs: Ptr, count: number): GuestBuffers {
    this.check(iovs, count * IOVEC_SIZE);
    const view = this.dataView;
    const end = this.bytes.length;
    let totalBytes = 0;
    for (let i = 0; i < count; i++) {
      const len = view.getUint32(iovs + i * IOVEC_SIZE + 4, true);
      if (view.getUint32(iovs + i * IOVEC_SIZE, true) + len > end) throw new GuestErrno(Errno.FAULT);
      totalBytes += len;
    }
    return new GuestBuffers(view, this.bytes, iovs, count, totalBytes);
  }

  /** Takes up the new buffer if memory.grow replaced it; a cheap identity check otherwise. */
  refresh(): void {
    const memory = this.memory;
    if (memory !== undefined && memory.buffer !== this.buffer) {
      const buffer = memory.buffer;
      this.buffer = buffer;
      this.dataView = new DataView(buffer);
      this.bytes = new Uint8Array(buffer);
    }
  }
}
