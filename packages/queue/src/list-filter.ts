import type { BuildRecord, BuildStatus } from "@m1l0/config";

export interface ListOptions {
  status?: BuildStatus;
  /** only builds this token name submitted */
  submitter?: string;
  limit?: number;
}

/** Whether a record passes a list's filters. */
export function matchesListFilter(record: BuildRecord, options: ListOptions): boolean {
  return (!options.status || record.status === options.status) && (options.submitter === undefined || record.submitter === options.submitter);
}
