import { Errno } from "./abi.js";

/** Host (Linux) error codes as Node reports them, mapped to preview1 errno values. */
const BY_CODE: Readonly<Record<string, number>> = {
  E2BIG: Errno.TOOBIG,
  EACCES: Errno.ACCES,
  EAGAIN: Errno.AGAIN,
  EBADF: Errno.BADF,
  EBUSY: Errno.BUSY,
  EEXIST: Errno.EXIST,
  EFAULT: Errno.FAULT,
  EFBIG: Errno.FBIG,
  EILSEQ: Errno.ILSEQ,
  EINVAL: Errno.INVAL,
  EIO: Errno.IO,
  EISDIR: Errno.ISDIR,
  ELOOP: Errno.LOOP,
  EMFILE: Errno.MFILE,
  EMLINK: Errno.MLINK,
  ENAMETOOLONG: Errno.NAMETOOLONG,
  ENFILE: Errno.NFILE,
  ENODEV: Errno.NODEV,
  ENOENT: Errno.NOENT,
  ENOMEM: Errno.NOMEM,
  ENOSPC: Errno.NOSPC,
  ENOSYS: Errno.NOSYS,
  ENOTDIR: Errno.NOTDIR,
  ENOTEMPTY: Errno.NOTEMPTY,
  ENOTSUP: Errno.NOTSUP,
  EOPNOTSUPP: Errno.NOTSUP,
  ENOTTY: Errno.NOTTY,
  ENXIO: Errno.NXIO,
  EOVERFLOW: Errno.OVERFLOW,
  EPERM: Errno.PERM,
  EPIPE: Errno.PIPE,
  ERANGE: Errno.RANGE,
  EROFS: Errno.ROFS,
  ESPIPE: Errno.SPIPE,
  ETXTBSY: Errno.TXTBSY,
  EXDEV: Errno.XDEV,
  EDQUOT: Errno.DQUOT,
};

/** The preview1 errno for a thrown Node fs error; EIO for anything unrecognised. */
export function errnoOf(e: unknown): number {
  if (e instanceof Error && "code" in e && typeof e.code === "string") return BY_CODE[e.code] ?? Errno.IO;
  return Errno.IO;
}

/**
 * An errno to hand back to the guest, thrown from anywhere inside a call (a bad pointer, a missing right, a
 * refused path) and turned into the call's return value by the import binding, the one place that does so.
 */
export class GuestErrno {
  constructor(readonly errno: number) {}
}

/**
 * The errno a call answers for what it threw: its own GuestErrno, or a Node fs error's code. Anything else
 * is not the guest's doing (a host bug, or the run ending) and is thrown on, so the run reports it.
 */
export function errnoForThrown(e: unknown): number | undefined {
  if (e instanceof GuestErrno) return e.errno;
  if (e instanceof Error && "code" in e) return errnoOf(e);
  return undefined;
}
