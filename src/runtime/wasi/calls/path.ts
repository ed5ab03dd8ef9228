/**
 * The path_* calls: each names a path relative to a directory descriptor, checks the descriptor's rights and
 * its mount's writability on its first lines, then walks and acts inside containment (containment.ts) under
 * the namespace lock.
 */
import * as nodeFs from "node:fs";
import { MAX_OPEN_FDS } from "../../../limits.js";
import { DIR_RIGHTS, Errno, Fdflags, FILE_RIGHTS, LOOKUP_SYMLINK_FOLLOW, MUTATING_RIGHTS, Oflags, Rights } from "../abi.js";
import { at, existsAt, insideMount, lstatAt, openFinal, unlinkIfSame } from "../containment.js";
import type { WasiContext } from "../context.js";
import { closeHostFd, requireRight } from "../descriptors.js";
import { GuestErrno } from "../errno.js";
import type { Preview1Calls } from "../types.js";
import { writeFilestat } from "./fd.js";

const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY, O_NONBLOCK, O_DSYNC, O_SYNC } = nodeFs.constants;

/** The calls of this family. */
export type PathCalls = Pick<
  Preview1Calls,
  | "path_open"
  | "path_create_directory"
  | "path_filestat_get"
  | "path_link"
  | "path_readlink"
  | "path_remove_directory"
  | "path_rename"
  | "path_symlink"
  | "path_unlink_file"
>;

/** Rights that make path_open ask the kernel for a writable fd. */
const WRITE_RIGHTS = Rights.FD_WRITE | Rights.FD_ALLOCATE | Rights.FD_FILESTAT_SET_SIZE;

/** Host open(2) flags for a path_open. */
function hostOpenFlags(oflags: number, fdflags: number, wantRead: boolean, wantWrite: boolean): number {
  let flags = O_NONBLOCK; // never hang on a FIFO the mount may contain; regular files ignore it
  if ((oflags & Oflags.DIRECTORY) !== 0) flags |= O_DIRECTORY;
  if ((oflags & Oflags.CREAT) !== 0) flags |= O_CREAT;
  if ((oflags & Oflags.EXCL) !== 0) flags |= O_EXCL;
  if ((oflags & Oflags.TRUNC) !== 0) flags |= O_TRUNC;
  if ((fdflags & Fdflags.APPEND) !== 0) flags |= O_APPEND;
  if ((fdflags & Fdflags.DSYNC) !== 0) flags |= O_DSYNC;
  if ((fdflags & (Fdflags.SYNC | Fdflags.RSYNC)) !== 0) flags |= O_SYNC;
  // A directory asked for with write rights gets EISDIR from the kernel, as POSIX wants.
  if (wantWrite || (oflags & Oflags.TRUNC) !== 0) flags |= wantRead ? O_RDWR : O_WRONLY;
  else flags |= O_RDONLY;
  return flags;
}

/** path_* calls. */
export function pathCalls(ctx: WasiContext): PathCalls {
  const { mem, fds, containment } = ctx;
  return {
    path_open: (fd, dirflags, pathPtr, pathLen, oflags, base, inheriting, fdflags, out) => {
      const d = fds.fsEntry(fd);
      const path = ctx.readPath(pathPtr, pathLen);
      requireRight(d, Rights.PATH_OPEN);
      const wantWrite = (base & WRITE_RIGHTS) !== 0n || (fdflags & Fdflags.APPEND) !== 0;
      if (wantWrite || (oflags & (Oflags.CREAT | Oflags.TRUNC)) !== 0) ctx.requireWritable("path_open", d, path);
      if ((oflags & Oflags.CREAT) !== 0) requireRight(d, Rights.PATH_CREATE_FILE);
      if ((oflags & Oflags.TRUNC) !== 0) requireRight(d, Rights.PATH_FILESTAT_SET_SIZE);
      if (fds.openCount >= MAX_OPEN_FDS) {
        ctx.deny("path_open", d, path, `open descriptor limit of ${MAX_OPEN_FDS} reached`);
        return Errno.MFILE;
      }
      // Checked before anything is opened or created: a descriptor the guest cannot learn of would leak.
      mem.check(out, 4);
      const follow = (dirflags & LOOKUP_SYMLINK_FOLLOW) !== 0;
      const wantRead = (base & (Rights.FD_READ | Rights.FD_READDIR)) !== 0n;
      let flags = hostOpenFlags(oflags, fdflags, wantRead, wantWrite);
      return containment.shared("path_open", d, path, () =>
        containment.withPath("path_open", d, path, follow, (r) => {
          if (r.trailingSlash && (oflags & Oflags.CREAT) !== 0) return Errno.ISDIR;
          if (r.trailingSlash) flags |= O_DIRECTORY;
          if ((oflags & Oflags.CREAT) !== 0 && !existsAt(r)) ctx.chargeCreate("path_open", d, path);
          let opened: { fd: number; created: boolean };
          try {
            opened = openFinal(r, flags);
          } catch (e: unknown) {
            // O_NOFOLLOW on a symlink says ELOOP; for a directory lookup, "not a directory" is the POSIX answer.
            if (e instanceof GuestErrno && e.errno === Errno.LOOP && (oflags & Oflags.DIRECTORY) !== 0) return Errno.NOTDIR;
            throw e;
          }
          let keep = false;
          try {
            if (!insideMount(opened.fd, d.mount)) {
              // Only a process outside the daemon can get here (guests' renames wait for the lock): see keepCreatedInside.
              if (opened.created) {
                try {
                  unlinkIfSame(r, nodeFs.fstatSync(opened.fd, { bigint: true }));
                } catch {
                  // Already gone or replaced: nothing of ours is left to remove.
                }
              }
              ctx.deny(
                "path_open",
                d,
                path,
                `the opened file lies outside the mount${opened.created ? "; the file it created there was removed" : ""}`,
              );
              return Errno.NOTCAPABLE;
            }
            const st = nodeFs.fstatSync(opened.fd);
            const isDir = st.isDirectory();
            if (!isDir && !st.isFile()) {
              ctx.deny("path_open", d, path, "only regular files and directories can be opened");
              return Errno.NOTCAPABLE;
            }
            const mask = (isDir ? DIR_RIGHTS : FILE_RIGHTS) & (d.mount.writable ? ~0n : ~MUTATING_RIGHTS);
            const joined = `${d.guestPath.endsWith("/") ? d.guestPath : `${d.guestPath}/`}${path}`;
            const rights = { base: base & d.rights.inheriting & mask, inheriting: inheriting & d.rights.inheriting };
            const shared = { hostFd: opened.fd, mount: d.mount, guestPath: joined, rights, fdflags: fdflags & ~Fdflags.NONBLOCK };
            const newFd = isDir
              ? fds.install({ kind: "dir", ...shared, preopenName: undefined, dirents: undefined })
              : fds.install({ kind: "file", ...shared, access: flags & (O_WRONLY | O_RDWR), position: 0 });
            keep = true;
            mem.setU32(out, newFd);
            return Errno.SUCCESS;
          } finally {
            if (!keep) closeHostFd(opened.fd);
          }
        }),
      );
    },

    path_create_directory: (fd, pathPtr, pathLen) => {
      const d = fds.fsEntry(fd);
      const path = ctx.readPath(pathPtr, pathLen);
      ctx.requireWritable("path_create_directory", d, path);
      requireRight(d, Rights.PATH_CREATE_DIRECTORY);
      return containment.shared("path_create_directory", d, path, () =>
        containment.withPath("path_create_directory", d, path, false, (r) => {
          if (r.name === ".") return Errno.EXIST;
          ctx.chargeCreate("path_create_directory", d, path);
          nodeFs.mkdirSync(at(r.dirFd, r.name), 0o777);
          // rmdir removes only an empty directory: never anything someone put in its place.
          containment.keepCreatedInside("path_create_directory", d, path, r, () => nodeFs.rmdirSync(at(r.dirFd, r.name)));
          return Errno.SUCCESS;
        }),
      );
    },

    path_filestat_get: (fd, lookupflags, pathPtr, pathLen, out) => {
      const d = fds.fsEntry(fd);
      const path = ctx.readPath(pathPtr, pathLen);
      requireRight(d, Rights.PATH_FILESTAT_GET);
      const follow = (lookupflags & LOOKUP_SYMLINK_FOLLOW) !== 0;
      return containment.shared("path_filestat_get", d, path, () =>
        containment.withPath("path_filestat_get", d, path, follow, (r) => {
          const st = lstatAt(r);
          if (r.trailingSlash && !st.isDirectory()) return Errno.NOTDIR;
          writeFilestat(ctx, out, st);
          return Errno.SUCCESS;
        }),
      );
    },

    // Hard links only within granted, writable mounts.
    path_link: (oldFd, oldFlags, oldPtr, oldLen, newFd, newPtr, newLen) => {
      const od = fds.fsEntry(oldFd);
      const nd = fds.fsEntry(newFd);
      const oldPath = ctx.readPath(oldPtr, oldLen);
      const newPath = ctx.readPath(newPtr, newLen);
      ctx.requireWritable("path_link", od, oldPath);
      ctx.requireWritable("path_link", nd, newPath);
      requireRight(od, Rights.PATH_LINK_SOURCE);
      requireRight(nd, Rights.PATH_LINK_TARGET);
      const follow = (oldFlags & LOOKUP_SYMLINK_FOLLOW) !== 0;
      return containment.shared("path_link", nd, newPath, () =>
        containment.withPath("path_link", od, oldPath, follow, (ro) =>
          containment.withPath("path_link", nd, newPath, false, (rn) => {
            const st = lstatAt(ro);
            if (st.isDirectory()) return Errno.PERM;
            if (ro.trailingSlash) return Errno.NOTDIR;
            if (rn.trailingSlash) return existsAt(rn) ? Errno.EXIST : Errno.NOENT;
            ctx.chargeCreate("path_link", nd, newPath);
            nodeFs.linkSync(at(ro.dirFd, ro.name), at(rn.dirFd, rn.name));
            containment.keepCreatedInside("path_link", nd, newPath, rn, () => unlinkIfSame(rn, st));
            return Errno.SUCCESS;
          }),
        ),
      );
    },

    // The target text, truncated to the buffer like readlink(2).
    path_readlink: (fd, pathPtr, pathLen, buf, bufLen, usedOut) => {
      const d = fds.fsEntry(fd);
      const path = ctx.readPath(pathPtr, pathLen);
      requireRight(d, Rights.PATH_READLINK);
      mem.check(usedOut, 4);
      return containment.shared("path_readlink", d, path, () =>
        containment.withPath("path_readlink", d, path, false, (r) => {
          const target = nodeFs.readlinkSync(at(r.dirFd, r.name), { encoding: "buffer" });
          const n = Math.min(target.length, bufLen);
          mem.write(buf, target.subarray(0, n));
          mem.setU32(usedOut, n);
          return Errno.SUCCESS;
        }),
      );
    },

    path_remove_directory: (fd, pathPtr, pathLen) => {
      const d = fds.fsEntry(fd);
      const path = ctx.readPath(pathPtr, pathLen);
      ctx.requireWritable("path_remove_directory", d, path);
      requireRight(d, Rights.PATH_REMOVE_DIRECTORY);
      return containment.shared("path_remove_directory", d, path, () =>
        containment.withPath("path_remove_directory", d, path, false, (r) => {
          if (r.name === ".") return Errno.INVAL;
          if (!lstatAt(r).isDirectory()) return Errno.NOTDIR;
          nodeFs.rmdirSync(at(r.dirFd, r.name));
          return Errno.SUCCESS;
        }),
      );
    },

    path_rename: (fd, oldPtr, oldLen, newFd, newPtr, newLen) => {
      const od = fds.fsEntry(fd);
      const nd = fds.fsEntry(newFd);
      const oldPath = ctx.readPath(oldPtr, oldLen);
      const newPath = ctx.readPath(newPtr, newLen);
      ctx.requireWritable("path_rename", od, oldPath);
      ctx.requireWritable("path_rename", nd, newPath);
      requireRight(od, Rights.PATH_RENAME_SOURCE);
      requireRight(nd, Rights.PATH_RENAME_TARGET);
      // The one call that moves directories (and files) between mounts: it runs alone, see namespace-lock.ts.
      return containment.exclusive("path_rename", nd, newPath, () =>
        containment.withPath("path_rename", od, oldPath, false, (ro) =>
          containment.withPath("path_rename", nd, newPath, false, (rn) => {
            if (ro.name === "." || rn.name === ".") return Errno.BUSY;
            if ((ro.trailingSlash || rn.trailingSlash) && !lstatAt(ro).isDirectory()) return Errno.NOTDIR;
            nodeFs.renameSync(at(ro.dirFd, ro.name), at(rn.dirFd, rn.name));
            return Errno.SUCCESS;
          }),
        ),
      );
    },

    // The link text is stored as given, but one pointing outside could never be followed anyway; absolute
    // targets are refused outright so nothing on the host is tempted to follow them either.
    path_symlink: (oldPtr, oldLen, fd, newPtr, newLen) => {
      const d = fds.fsEntry(fd);
      const target = ctx.readPath(oldPtr, oldLen);
      const path = ctx.readPath(newPtr, newLen);
      ctx.requireWritable("path_symlink", d, path);
      requireRight(d, Rights.PATH_SYMLINK);
      if (target.startsWith("/")) {
        ctx.deny("path_symlink", d, path, `symlink target ${target} is absolute, outside the mount`);
        return Errno.PERM;
      }
      return containment.shared("path_symlink", d, path, () =>
        containment.withPath("path_symlink", d, path, false, (r) => {
          if (r.name === ".") return Errno.EXIST;
          if (r.trailingSlash) return existsAt(r) ? Errno.EXIST : Errno.NOENT;
          ctx.chargeCreate("path_symlink", d, path);
          nodeFs.symlinkSync(target, at(r.dirFd, r.name));
          containment.keepCreatedInside("path_symlink", d, path, r, () => {
            if (nodeFs.readlinkSync(at(r.dirFd, r.name)) === target) nodeFs.unlinkSync(at(r.dirFd, r.name));
          });
          return Errno.SUCCESS;
        }),
      );
    },

    path_unlink_file: (fd, pathPtr, pathLen) => {
      const d = fds.fsEntry(fd);
      const path = ctx.readPath(pathPtr, pathLen);
      ctx.requireWritable("path_unlink_file", d, path);
      requireRight(d, Rights.PATH_UNLINK_FILE);
      return containment.shared("path_unlink_file", d, path, () =>
        containment.withPath("path_unlink_file", d, path, false, (r) => {
          if (r.name === ".") return Errno.ISDIR;
          const st = lstatAt(r);
          if (st.isDirectory()) return Errno.ISDIR;
          if (r.trailingSlash) return Errno.NOTDIR;
          nodeFs.unlinkSync(at(r.dirFd, r.name));
          return Errno.SUCCESS;
        }),
      );
    },
  };
}
