/** execa, imported on first use: the daemon answers SERVING before anything spawns a process, so it need not load it first. */
export async function loadExeca(): Promise<typeof import("execa").execa> {
  return (await import("execa")).execa;
}
