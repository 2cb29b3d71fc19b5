import SMGRedis

/// The Lua scripts that make each stage transition one atomic round trip.
///
/// Times inside scripts come from Redis (`TIME`), so leases mean the same on every site.
/// Each script touches several keys: the gateway runs on one primary (with replicas and
/// Sentinel), not on Redis Cluster.
enum Scripts {
    static let now = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        """

    /// KEYS: msg, body, ev, global, pending_out, fingerprint
    /// ARGV: id, envelope JSON, body, event JSON, redrive_after_ms, global_maxlen, fingerprint_ttl_s
    /// Returns 1 when stored, 0 when the id already existed (nothing changed), or the id of the
    /// message already stored under the same submission fingerprint within its time to live
    /// (nothing changed: a client's retry of a transaction whose first 250 it never saw).
    static let accept = RedisScript("""
        \(now)
        local ttl = tonumber(ARGV[7])
        if ttl > 0 then
          local prior = redis.call('GET', KEYS[6])
          if prior then return prior end
        end
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('SET', KEYS[2], ARGV[3])
        redis.call('HSET', KEYS[1], 'envelope', ARGV[2], 'state', 'accepted', 'created', now)
        redis.call('XADD', KEYS[3], '*', 'e', ARGV[4])
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[4])
        redis.call('ZADD', KEYS[5], now + tonumber(ARGV[5]), ARGV[1])
        if ttl > 0 then redis.call('SET', KEYS[6], ARGV[1], 'EX', ttl) end
        return 1
        """)

    /// KEYS: pending, owners.  ARGV: id, owner, lease_ms
    /// Takes the lease when nobody holds a live one — not even the caller (every claim has its own
    /// token anyway; this keeps a message from being worked on twice at once whatever the caller does).
    /// 1 = yours, 0 = done already or held (or waiting for its retry time).
    static let claim = RedisScript("""
        \(now)
        local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if not score then return 0 end
        local cur = redis.call('HGET', KEYS[2], ARGV[1])
        if cur and tonumber(score) > now then return 0 end
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
        return 1
        """)

    /// KEYS: pending, owners.  ARGV: owner, lease_ms, limit
    /// Takes the leases of up to `limit` entries whose deadline has passed; returns their ids.
    static let claimExpired = RedisScript("""
        \(now)
        local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
        for _, id in ipairs(ids) do
          redis.call('HSET', KEYS[2], id, ARGV[1])
          redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
        end
        return ids
        """)

    /// Lua: is the recipient state JSON in `cur` final (delivered or bounced)?
    static let isFinal = """
        local function is_final(cur)
          return cur and (string.find(cur, '"state":"delivered"', 1, true) or string.find(cur, '"state":"bounced"', 1, true))
        end
        """

    /// KEYS: pending_in, owners_in, msg, ev, global, pending_out, body, then 4 per new message:
    ///       msg_i, body_i, ev_i, pending_i
    /// ARGV: id, owner, mode (forward|done|wait), delay_ms, global_maxlen, retention_s, body_retention_s,
    ///       n_events, n_new, message_events_cap, events…, 4 per new message (id, envelope, body,
    ///       accepted event), then field/value pairs for the message hash.
    /// forward: leave the stage, enter pending_out with deadline now+delay.
    /// done:    leave the stage; the records expire after the retention time.
    /// wait:    stay in the stage, unowned, until now+delay (a retry time).
    /// hold:    leave the stage into `held` (KEYS[6]) with ARGV[4] = the topic a release returns
    ///          it to, as an operator's `queue hold` does.
    /// New messages (NDRs, notices) are stored like `accept` does, due at once, unless they exist.
    /// A recipient state that is final (delivered, bounced) is never overwritten.
    /// The commit is idempotent for its lease token (`committed_by`): a retry after a lost reply
    /// returns 1 without writing again.
    /// Returns 1 when recorded, 0 when the caller no longer holds the lease (nothing changed).
    static let commit = RedisScript("""
        \(now)
        \(isFinal)
        local id = ARGV[1]
        if redis.call('HGET', KEYS[3], 'committed_by') == ARGV[2] then return 1 end
        if not redis.call('ZSCORE', KEYS[1], id) then return 0 end
        if redis.call('HGET', KEYS[2], id) ~= ARGV[2] then return 0 end
        local mode = ARGV[3]
        local delay = tonumber(ARGV[4])
        local n = tonumber(ARGV[8])
        local nnew = tonumber(ARGV[9])
        local cap = tonumber(ARGV[10])
        local a = 11
        for i = a, a + n - 1 do
          redis.call('XADD', KEYS[4], 'MAXLEN', '~', cap, '*', 'e', ARGV[i])
          redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[i])
        end
        a = a + n
        for j = 0, nnew - 1 do
          local k = 8 + j * 4
          if redis.call('EXISTS', KEYS[k]) == 0 then
            redis.call('SET', KEYS[k + 1], ARGV[a + 2])
            redis.call('HSET', KEYS[k], 'envelope', ARGV[a + 1], 'state', 'accepted', 'created', now)
            redis.call('XADD', KEYS[k + 2], 'MAXLEN', '~', cap, '*', 'e', ARGV[a + 3])
            redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[a + 3])
            redis.call('ZADD', KEYS[k + 3], now, ARGV[a])
          end
          a = a + 4
        end
        -- Fields in batches (Lua's unpack has a limit of a few thousand values); the last batch
        -- also carries committed_by and the new state (later pairs of one HSET win): every
        -- redis.call costs a script several microseconds.
        local batch = {}
        for i = a, #ARGV - 1, 2 do
          local f = ARGV[i]
          if string.sub(f, 1, 5) ~= 'rcpt:' or not is_final(redis.call('HGET', KEYS[3], f)) then
            batch[#batch + 1] = f
            batch[#batch + 1] = ARGV[i + 1]
          end
          if #batch >= 1000 then
            redis.call('HSET', KEYS[3], unpack(batch))
            batch = {}
          end
        end
        batch[#batch + 1] = 'committed_by'
        batch[#batch + 1] = ARGV[2]
        local states = {forward = 'queued', hold = 'held', done = 'done'}
        if states[mode] then
          batch[#batch + 1] = 'state'
          batch[#batch + 1] = states[mode]
        end
        if mode == 'done' then
          batch[#batch + 1] = 'finished'
          batch[#batch + 1] = now
        end
        redis.call('HSET', KEYS[3], unpack(batch))
        if mode == 'forward' then
          redis.call('ZREM', KEYS[1], id)
          redis.call('HDEL', KEYS[2], id)
          redis.call('ZADD', KEYS[6], now + delay, id)
        elseif mode == 'hold' then
          redis.call('ZREM', KEYS[1], id)
          redis.call('HDEL', KEYS[2], id)
          redis.call('HSET', KEYS[6], id, ARGV[4])
        elseif mode == 'done' then
          redis.call('ZREM', KEYS[1], id)
          redis.call('HDEL', KEYS[2], id)
          local keep = tonumber(ARGV[6])
          redis.call('EXPIRE', KEYS[3], keep)
          redis.call('EXPIRE', KEYS[4], keep)
          redis.call('EXPIRE', KEYS[7], tonumber(ARGV[7]))
        else
          redis.call('ZADD', KEYS[1], now + delay, id)
          redis.call('HSET', KEYS[2], id, '~wait')
        end
        return 1
        """)

    /// KEYS: msg, ev, global.  ARGV: global_maxlen, message_events_cap, n_events, events…, field/value pairs.
    /// Records what a worker did after it lost its lease (a remote server already said 250): its
    /// events, and those recipient states that are final where the record's are not. Nothing
    /// else (no transition: the message belongs to the lease holder now). Returns the number of
    /// recipient states written, or -1 when the record is gone.
    static let recordOrphan = RedisScript("""
        \(isFinal)
        if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
        local n = tonumber(ARGV[3])
        for i = 4, 3 + n do
          redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[2]), '*', 'e', ARGV[i])
          redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
        end
        local written = 0
        for i = 4 + n, #ARGV - 1, 2 do
          local f = ARGV[i]
          if string.sub(f, 1, 5) == 'rcpt:' and is_final(ARGV[i + 1]) and not is_final(redis.call('HGET', KEYS[1], f)) then
            redis.call('HSET', KEYS[1], f, ARGV[i + 1])
            written = written + 1
          end
        end
        return written
        """)

    /// KEYS: pending, owners, quarantine, msg, ev, global.  ARGV: id, owner, topic, event, global_maxlen, cap
    /// Moves a message whose record cannot be read out of its stage into the quarantine set, with
    /// an event. Only the lease holder can. 1 = quarantined, 0 = not the holder.
    static let quarantine = RedisScript("""
        \(now)
        local id = ARGV[1]
        if redis.call('HGET', KEYS[2], id) ~= ARGV[2] then return 0 end
        redis.call('ZREM', KEYS[1], id)
        redis.call('HDEL', KEYS[2], id)
        redis.call('ZADD', KEYS[3], now, id)
        if redis.call('TYPE', KEYS[4])['ok'] == 'hash' then
          redis.call('HSET', KEYS[4], 'state', 'quarantined', 'quarantined_from', ARGV[3])
        end
        redis.pcall('XADD', KEYS[5], 'MAXLEN', '~', tonumber(ARGV[6]), '*', 'e', ARGV[4])
        redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[4])
        return 1
        """)

    /// KEYS: pending, owners.  ARGV: id, owner, lease_ms
    /// Extends a lease the caller still holds (heartbeat while a stage works). 1 = extended.
    static let renew = RedisScript("""
        \(now)
        if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
        if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
        return 1
        """)

    /// KEYS: pending, owners.  ARGV: id, owner, delay_ms
    /// Gives a lease back (fail closed: the message is tried again after the delay).
    static let release = RedisScript("""
        \(now)
        if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
        if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
        redis.call('HSET', KEYS[2], ARGV[1], '~wait')
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
        return 1
        """)
}
