import { TERMINAL_STATUSES } from "@m1l0/config";

/** Lua: true while `status` is not a terminal one (the list is @m1l0/config's, never restated here). */
const ACTIVE_LUA = TERMINAL_STATUSES.map((status) => `status ~= '${status}'`).join(" and ");

/**
 * KEYS: record, index, events, in-flight marker. ARGV: record JSON, createdAt ms, prune-before
 * ms, id, first event JSON, events maxlen, in-flight TTL, record key prefix, use-in-flight flag.
 * Replies {0, id} attached to an active build, {1, id} created, {2, id} id already taken.
 */
export const CREATE_SCRIPT = `
if ARGV[9] == '1' then
  local holder = redis.call('GET', KEYS[4])
  if holder then
    local raw = redis.call('GET', ARGV[8] .. holder)
    if raw then
      local status = cjson.decode(raw)['status']
      if ${ACTIVE_LUA} then
        return {0, holder}
      end
    end
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return {2, ARGV[4]} end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5])
if ARGV[9] == '1' then redis.call('SET', KEYS[4], ARGV[4], 'EX', ARGV[7]) end
return {1, ARGV[4]}
`;
/** KEYS: claim. ARGV: id, ttl ms. Replies the holder's id. */
export const CLAIM_SCRIPT = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
`;
/** KEYS: key. ARGV: id. Deletes the key only while it still names this id. */
export const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;


/**
 * KEYS: record. ARGV: sha1 of the value the update read, the new value. Writes the new value
 * only when the record is still the one read (an optimistic read-modify-write that, unlike
 * WATCH, does not claim the whole connection). KEEPTTL: a finished record keeps its retention.
 * Replies 1 written, 0 changed meanwhile (read again), -1 gone.
 */
export const SET_IF_UNCHANGED_SCRIPT = `
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if redis.sha1hex(current) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
`;
