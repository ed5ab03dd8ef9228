/**
 * Tells, in the kernel's own order, which changes were made inside a directory while another guest had
 * moved it into a mount the writer was never granted.
 *
 * The directory is watched by inode (inotify follows it wherever it is moved) and the private mount's
 * root by name. Node runs every fs.watch of a process on one inotify descriptor, so both watches' events
 * arrive in one queue, in the order the kernel made them: "d" appearing in or leaving the private root
 * toggles where the directory is, and any other event from inside the directory while it is away is a
 * change made there. Timestamps could not tell this (a create racing a move lands microseconds after it).
 */
import { watch, type FSWatcher } from "node:fs";
import { basename, join } from "node:path";

/** What a watch saw. */
export interface MovedDirReport {
  /** Events from inside the directory while it sat in the private root (each one a change made there). */
  readonly whileAway: number;
  /** Their file names, up to 20, for the failure message. */
  readonly samples: string[];
  /** Events from inside the directory in all. */
  readonly inside: number;
  /** Times the directory entered or left the private root. */
  readonly moves: number;
}

/** Watches `dir` (which starts outside `privateRoot` and is moved to `privateRoot/<basename dir>` and back). */
export function watchMovedDir(dir: string, privateRoot: string): { stop(): Promise<MovedDirReport> } {
  const name = basename(dir);
  let away = false;
  let whileAway = 0;
  let inside = 0;
  let moves = 0;
  const samples: string[] = [];
  const watchers: FSWatcher[] = [
    watch(privateRoot, (_event, file) => {
      if (file !== name) return;
      away = !away;
      moves++;
    }),
    watch(dir, (_event, file) => {
      // Events about the watched directory itself (its own moves) carry its name; it contains no entry of that name.
      if (file === null || file === name) return;
      inside++;
      if (!away) return;
      whileAway++;
      if (samples.length < 20) samples.push(join(privateRoot, name, file));
    }),
  ];
  return {
    async stop(): Promise<MovedDirReport> {
      // Let the events of the last operations reach us before looking.
      await new Promise((resolve) => setTimeout(resolve, 300));
      for (const w of watchers) w.close();
      return { whileAway, samples, inside, moves };
    },
  };
}
