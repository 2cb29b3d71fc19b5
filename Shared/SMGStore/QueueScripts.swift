import SMGRedis

/// The Lua script behind every operator action on the queue (`QueueAdmin`): one script, so that
/// hold, release, bounce, delete and requeue share one tested path and each is one atomic step.
///
/// The caller first reads where the message sits (`QueueAdmin.locate`) and builds the events and
/// field changes for that place; the script re-checks that place (and every field the change was
/// computed from) and refuses with `moved` / `changed` — having written nothing — if anything
/// differs, so a stage that moved the message in between is never overwritten. The caller then
/// reads again and retries.
enum QueueScripts {
    /// KEYS: msg, body, ev, global, held, quarantine, src_pending, src_owners, dst_pending, dst_owners,
    ///       ndr_msg, ndr_body, ndr_ev, ndr_pending
    /// ARGV: id, loc_kind (pending|held|quarantined), loc_topic, loc_owner ('' = none),
    ///       dest (held|pending|final), dest_arg (held: topic it was taken from; final: the final state),
    ///       global_maxlen, retention_s, body_retention_s,
    ///       n_check, (field, expected value; '' = absent)…,
    ///       n_set, (field, value)…, n_del, field…, n_events, event…,
    ///       ndr (0|1) [, ndr_id, ndr_envelope, ndr_body, ndr_event]
    ///
    /// - held:    leaves its place, `HSET held id dest_arg`.
    /// - pending: leaves its place, enters dst_pending unowned with deadline now (redrive takes it next).
    /// - final:   leaves its place, `state = dest_arg`, `finished = now`; records expire like those of
    ///            a finished message (msg and ev after retention, body after body retention).
    /// With ndr = 1 the NDR is stored as a new message in ndr_pending with deadline now, exactly as
    /// the accept script stores one (once: an NDR id that exists already is left alone).
    ///
    /// Returns {'ok', ndr_stored 0|1}, {'moved'} (not where the caller saw it) or
    /// {'changed', field} (a field differs from what the caller read); only 'ok' wrote anything.
    static let transition = RedisScript("""
        \(Scripts.now)
        local id = ARGV[1]
        local kind, ltopic, lowner = ARGV[2], ARGV[3], ARGV[4]
        if kind == 'pending' then
          if not redis.call('ZSCORE', KEYS[7], id) then return {'moved'} end
          if (redis.call('HGET', KEYS[8], id) or '') ~= lowner then return {'moved'} end
          if redis.call('HEXISTS', KEYS[5], id) == 1 then return {'moved'} end
        elseif kind == 'held' then
          if redis.call('HGET', KEYS[5], id) ~= ltopic then return {'moved'} end
        elseif kind == 'quarantined' then
          if not redis.call('ZSCORE', KEYS[6], id) then return {'moved'} end
        else
          return {'moved'}
        end
        local i = 10
        local n = tonumber(ARGV[i])
        for j = i + 1, i + 2 * n, 2 do
          if (redis.call('HGET', KEYS[1], ARGV[j]) or '') ~= ARGV[j + 1] then return {'changed', ARGV[j]} end
        end
        i = i + 2 * n + 1
        -- Checked: from here on every branch writes.
        if kind == 'pending' then
          redis.call('ZREM', KEYS[7], id)
          redis.call('HDEL', KEYS[8], id)
        elseif kind == 'held' then
          redis.call('HDEL', KEYS[5], id)
        else
          redis.call('ZREM', KEYS[6], id)
        end
        n = tonumber(ARGV[i])
        local fields = {}
        for j = i + 1, i + 2 * n do fields[#fields + 1] = ARGV[j] end
        if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
        i = i + 2 * n + 1
        n = tonumber(ARGV[i])
        for j = i + 1, i + n do redis.call('HDEL', KEYS[1], ARGV[j]) end
        i = i + n + 1
        n = tonumber(ARGV[i])
        for j = i + 1, i + n do
          redis.call('XADD', KEYS[3], '*', 'e', ARGV[j])
          redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'e', ARGV[j])
        end
        i = i + n + 1
        local dest = ARGV[5]
        if dest == 'held' then
          redis.call('HSET', KEYS[5], id, ARGV[6])
        elseif dest == 'pending' then
          redis.call('HDEL', KEYS[10], id)
          redis.call('ZADD', KEYS[9], now, id)
        else
          redis.call('HSET', KEYS[1], 'state', ARGV[6], 'finished', now)
          local keep = tonumber(ARGV[8])
          redis.call('EXPIRE', KEYS[1], keep)
          redis.call('EXPIRE', KEYS[3], keep)
          redis.call('EXPIRE', KEYS[2], tonumber(ARGV[9]))
        end
        local stored = 0
        if ARGV[i] == '1' and redis.call('EXISTS', KEYS[11]) == 0 then
          local nid = ARGV[i + 1]
          redis.call('SET', KEYS[12], ARGV[i + 3])
          redis.call('HSET', KEYS[11], 'envelope', ARGV[i + 2], 'state', 'accepted', 'created', now)
          redis.call('XADD', KEYS[13], '*', 'e', ARGV[i + 4])
          redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'e', ARGV[i + 4])
          redis.call('ZADD', KEYS[14], now, nid)
          stored = 1
        end
        return {'ok', stored}
        """)
}
