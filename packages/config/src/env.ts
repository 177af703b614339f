import { z } from "zod";

/** A boolean environment variable: true/1/yes or false/0/no/empty (default false). */
export const envBoolean = z
  .enum(["true", "false", "1", "0", "yes", "no", ""])
  .default("false")
  .transform((value) => value === "true" || value === "1" || value === "yes");
