import { compareHistoryPositions, type BuildRecord, type BuildStatus, type HistoryPosition } from "@m1l0/config";
import { matchesListFilter, type BuildStore } from "@m1l0/queue";
import { LIST_KEYS_MAX, parseRecordIndexKey, recordIndexKey, recordIndexPrefix, type ArtifactStore } from "@m1l0/storage";

export interface HistoryPageOptions {
  status?: BuildStatus;
  /** only builds this token name submitted */
  submitter?: string;
  /** 1–500 */
  limit: number;
  /** resume strictly after this position (a decoded cursor) */
  after?: HistoryPosition;
}

export interface HistoryPage {
  builds: BuildRecord[];
  /** where the next page starts; absent on the last page */
  next?: HistoryPosition;
}

/** GETs of archived records in flight at once for one page */
const ARCHIVE_READS = 16;

interface Slot {
  position: HistoryPosition;
  /** absent until an archived record is read */
  record?: BuildRecord;
}

/**
 * One page of the history, newest first, merged from the two places a record lives: Redis
 * (every build until retention) and the archive's newest-first index (every finished build,
 * see @m1l0/storage record-index). Both are walked in the same order from the same position,
 * so a build in both meets itself and is taken once, from Redis (the current copy). The
 * archive is read through the index prefix of the filter, so a page costs one or two list calls
 * and a GET per archived build on it, however large the archive; the Redis walk is bounded by
 * retention.
 */
export async function readHistoryPage(
  store: BuildStore,
  readArchived: ((id: string) => Promise<BuildRecord | undefined>) | undefined,
  artifacts: ArtifactStore | undefined,
  options: HistoryPageOptions,
): Promise<HistoryPage> {
  const want = options.limit + 1; // one more than the page: is there a next page?
  const filter = { ...(options.status ? { status: options.status } : {}), ...(options.submitter !== undefined ? { submitter: options.submitter } : {}) };
  const filtered = options.status !== undefined || options.submitter !== undefined;
  const live = store.newestFirst(options.after, filtered ? 200 : Math.min(want, 200));
  const archived = artifacts && readArchived ? archivedPositions(artifacts, recordIndexPrefix(filter), options.after, want) : emptyWalk();
  const slots: Slot[] = [];
  try {
    let [liveHead, archivedHead] = await Promise.all([live.next(), archived.next()]);
    for (;;) {
      while (slots.length < want && !(liveHead.done && archivedHead.done)) {
        const order = liveHead.done ? 1 : archivedHead.done ? -1 : compareHistoryPositions(liveHead.value.position, archivedHead.value);
        if (order <= 0 && !liveHead.done) {
          const { position, record } = liveHead.value;
          if (matchesListFilter(record, filter)) slots.push({ position, record });
          // the same build archived: Redis's copy is the current one
          if (order === 0) archivedHead = await archived.next();
          liveHead = await live.next();
        } else if (!archivedHead.done) {
          slots.push({ position: archivedHead.value });
          archivedHead = await archived.next();
        }
      }
      const unread = slots.filter((slot) => !slot.record);
      if (unread.length === 0) break;
      await forEachLimited(unread, ARCHIVE_READS, async (slot) => {
        const record = await readArchived!(slot.position.id);
        // the index is checked against the record: a stale or foreign index key lists nothing
        if (record && record.id === slot.position.id && matchesListFilter(record, filter)) slot.record = record;
      });
      const kept = slots.filter((slot) => slot.record);
      const complete = kept.length === slots.length;
      slots.splice(0, slots.length, ...kept);
      if (complete) break; // otherwise top the page up past what could not be read
    }
  } finally {
    await Promise.all([live.return(undefined), archived.return(undefined)]);
  }
  const page = slots.slice(0, options.limit);
  const last = page[page.length - 1];
  return { builds: page.map((slot) => slot.record!), ...(slots.length > options.limit && last ? { next: last.position } : {}) };
}

/** Positions under one index prefix, newest first, strictly after `after`; lists lazily, in growing pages. */
async function* archivedPositions(artifacts: ArtifactStore, prefix: string, after: HistoryPosition | undefined, firstPage: number): AsyncGenerator<HistoryPosition, void, undefined> {
  let startAfter = after ? recordIndexKey(prefix, after) : undefined;
  let size = Math.min(Math.max(firstPage, 1), LIST_KEYS_MAX);
  for (;;) {
    const keys = await artifacts.listKeys(prefix, { limit: size, ...(startAfter !== undefined ? { startAfter } : {}) });
    for (const key of keys) {
      const position = parseRecordIndexKey(prefix, key);
      if (position) yield position;
    }
    if (keys.length < size) return;
    startAfter = keys[keys.length - 1];
    // later list calls come only when Redis held the first ones' builds too: take more at once
    size = Math.min(size * 2, LIST_KEYS_MAX);
  }
}

async function* emptyWalk(): AsyncGenerator<HistoryPosition, void, undefined> {}

async function forEachLimited<T>(items: T[], concurrency: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await run(items[next++]!);
    }),
  );
}
