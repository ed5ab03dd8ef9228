/** Clocks and poll_oneoff: real clocks, precise CPU-free sleeps, and readiness that never blocks on a file. */
import * as nodeFs from "node:fs";
import { Clock, Errno, EVENT_SIZE, EVENTRW_HANGUP, EventType, Rights, SUBCLOCK_ABSTIME, SUBSCRIPTION_SIZE } from "../abi.js";
import type { WasiContext } from "../context.js";
import { errnoOf } from "../errno.js";
import type { Preview1Calls } from "../types.js";

/** The calls of this family. */
export type ClocksPollCalls = Pick<Preview1Calls, "clock_res_get" | "clock_time_get" | "poll_oneoff">;

/** Shared cell that nobody ever notifies: Atomics.wait on it is a precise, CPU-free sleep. */
const SLEEP_CELL = new Int32Array(new SharedArrayBuffer(4));
const NS_PER_MS = 1_000_000;
const U64_MAX = (1n << 64n) - 1n;
/** Resolution of the CPU-time clocks: process.cpuUsage() counts microseconds. */
const CPU_CLOCK_RESOLUTION_NS = 1000n;

/** What poll_oneoff reports for one fd subscription. */
interface Readiness {
  readonly error: number;
  readonly nbytes: bigint;
  readonly flags: number;
}

const NOT_READY_BADF: Readiness = { error: Errno.BADF, nbytes: 0n, flags: 0 };

function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

/** clock_*_get and poll_oneoff. */
export function clocksPollCalls(ctx: WasiContext): ClocksPollCalls {
  const mem = ctx.mem;
  // Unix epoch minus the monotonic origin, taken per run so a stepped system clock is picked up by the next run.
  const realtimeOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

  const clockNow = (id: number): bigint | undefined => {
    switch (id) {
      case Clock.REALTIME:
        return realtimeOffsetNs + monotonicNs();
      case Clock.MONOTONIC:
        return monotonicNs();
      case Clock.PROCESS_CPUTIME:
      case Clock.THREAD_CPUTIME: {
        // Node 20 has no per-thread CPU clock; the process clock is monotonic and real, which is what guests rely on.
        const u = process.cpuUsage();
        return BigInt(u.user + u.system) * 1000n;
      }
      default:
        return undefined;
    }
  };

  const readiness = (fd: number, type: number): Readiness => {
    const d = ctx.fds.lookup(fd);
    if (d === undefined) return NOT_READY_BADF;
    switch (d.kind) {
      case "stdin": {
        if (type !== EventType.FD_READ) return NOT_READY_BADF;
        const left = ctx.options.stdin.length - ctx.stdinPos;
        // All of stdin is known up front, so it is always ready; at the end it reads as hang-up (EOF).
        return { error: Errno.SUCCESS, nbytes: BigInt(left), flags: left === 0 ? EVENTRW_HANGUP : 0 };
      }
      case "stdout":
      case "stderr": {
        if (type !== EventType.FD_WRITE) return NOT_READY_BADF;
        const used = d.kind === "stdout" ? ctx.stdoutBytes : ctx.stderrBytes;
        return { error: Errno.SUCCESS, nbytes: BigInt(Math.max(0, ctx.options.maxOutputBytes - used)), flags: 0 };
      }
      case "dir":
        return NOT_READY_BADF;
      case "file": {
        // Regular files never block.
        const need = type === EventType.FD_READ ? Rights.FD_READ : Rights.FD_WRITE;
        if ((d.rights.base & need) === 0n) return NOT_READY_BADF;
        if (type !== EventType.FD_READ) return { error: Errno.SUCCESS, nbytes: 0n, flags: 0 };
        try {
          return { error: Errno.SUCCESS, nbytes: BigInt(Math.max(0, nodeFs.fstatSync(d.hostFd).size - d.position)), flags: 0 };
        } catch (e: unknown) {
          return { error: errnoOf(e), nbytes: 0n, flags: 0 };
        }
      }
    }
  };

  const pollOneoff = (inPtr: number, outPtr: number, nsubs: number, neventsOut: number): number => {
    if (nsubs === 0) return Errno.INVAL;
    // Checked once as whole arrays: tens of millions of subscriptions must not cost a check per field.
    const subs = mem.region(inPtr, nsubs * SUBSCRIPTION_SIZE);
    const out = mem.region(outPtr, nsubs * EVENT_SIZE);
    mem.check(neventsOut, 4);
    let events = 0;
    let earliest: bigint | undefined;
    const now = monotonicNs();
    const writeEvent = (userdata: bigint, error: number, type: number, nbytes: bigint, flags: number): void => {
      const e = events * EVENT_SIZE;
      out.setBigUint64(e, userdata, true);
      out.setUint16(e + 8, error, true);
      out.setUint8(e + 10, type);
      out.setBigUint64(e + 16, nbytes, true);
      out.setUint16(e + 24, flags, true);
      events++;
    };
    // A clock subscription's deadline on the monotonic clock, or undefined for an unknown clock. A relative
    // one needs no reading of its clock: tens of millions of them must not cost a clock call each.
    const deadlineOf = (s: number): bigint | undefined => {
      const id = subs.getUint32(s + 16, true);
      if (id > Clock.THREAD_CPUTIME) return undefined;
      const timeout = subs.getBigUint64(s + 24, true);
      const relative = (subs.getUint16(s + 40, true) & SUBCLOCK_ABSTIME) !== 0 ? timeout - (clockNow(id) as bigint) : timeout;
      return now + (relative > 0n ? relative : 0n);
    };
    // First pass: fd readiness, unknown clocks, and the earliest deadline. Nothing is kept per subscription:
    // an object each let tens of millions of subscriptions exhaust the worker's heap.
    for (let i = 0; i < nsubs; i++) {
      const s = i * SUBSCRIPTION_SIZE;
      const userdata = subs.getBigUint64(s, true);
      const tag = subs.getUint8(s + 8);
      if (tag === EventType.CLOCK) {
        const deadline = deadlineOf(s);
        if (deadline === undefined) {
          writeEvent(userdata, Errno.INVAL, EventType.CLOCK, 0n, 0);
          continue;
        }
        if (earliest === undefined || deadline < earliest) earliest = deadline;
      } else if (tag === EventType.FD_READ || tag === EventType.FD_WRITE) {
        const r = readiness(subs.getUint32(s + 16, true), tag);
        writeEvent(userdata, r.error, tag, r.nbytes, r.flags);
      } else {
        return Errno.INVAL;
      }
    }
    if (events === 0 && earliest !== undefined) {
      let remaining = earliest - monotonicNs();
      if (remaining > 0n) ctx.options.flush?.();
      while (remaining > 0n) {
        Atomics.wait(SLEEP_CELL, 0, 0, Number(remaining) / NS_PER_MS);
        remaining = earliest - monotonicNs();
      }
    }
    if (events === 0) {
      // Only clocks (all known) are left: read them again. An absolute one has expired when its clock has
      // reached it (for CPU-time clocks, which a sleep does not advance, that can be later than before). Event
      // k never lands past subscription k's start (events are smaller), so even an output array laid over the
      // input one is read before it is written.
      const t = monotonicNs();
      for (let i = 0; i < nsubs; i++) {
        const s = i * SUBSCRIPTION_SIZE;
        const timeout = subs.getBigUint64(s + 24, true);
        const expired =
          (subs.getUint16(s + 40, true) & SUBCLOCK_ABSTIME) !== 0
            ? (clockNow(subs.getUint32(s + 16, true)) ?? 0n) >= timeout
            : now + timeout <= t;
        if (expired) writeEvent(subs.getBigUint64(s, true), Errno.SUCCESS, EventType.CLOCK, 0n, 0);
      }
    }
    mem.setU32(neventsOut, events);
    return Errno.SUCCESS;
  };

  return {
    clock_res_get: (id, out) => {
      if (id > Clock.THREAD_CPUTIME) return Errno.INVAL;
      mem.setU64(out, id === Clock.PROCESS_CPUTIME || id === Clock.THREAD_CPUTIME ? CPU_CLOCK_RESOLUTION_NS : 1n);
      return Errno.SUCCESS;
    },
    clock_time_get: (id, _precision, out) => {
      const t = clockNow(id);
      if (t === undefined) return Errno.INVAL;
      mem.setU64(out, t & U64_MAX);
      return Errno.SUCCESS;
    },
    poll_oneoff: pollOneoff,
  };
}
