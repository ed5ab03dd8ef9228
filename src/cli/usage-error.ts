/** A command-line mistake: the CLI prints its usage and exits 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}
