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

    /// KEYS: msg, body, ev, global, pending_out
    /// ARGV: id, envelope JSON, body, event JSON, redrive_after_ms, global_maxlen
    /// Returns 1 when stored, 0 when the id already existed (nothing changed).
    static let accept = RedisScript("""
        \(now)
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('SET', KEYS[2], ARGV[3])
        redis.call('HSET', KEYS[1], 'envelope', ARGV[2], 'state', 'accepted', 'created', now)
        redis.call('XADD', KEYS[3], '*', 'e', ARGV[4])
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[4])
        redis.call('ZADD', KEYS[5], now + tonumber(ARGV[5]), ARGV[1])
        return 1
        """)

    /// KEYS: pending, owners.  ARGV: id, owner, lease_ms
    /// Takes the lease when nobody holds a live one — not even the caller (every claim has its own
    /// token anyway; this keeps a message from being worked on twice at once whatever the caller does).
    /// 1 = yours, 0 = done already or held (or waiting for its retry time).
    static let claim = RedisScript("""
        \(takeLease)
        return 1
        """)

    /// The lease-taking part of `claim` and `claimAndLoad` (KEYS: pending, owners; ARGV: id, owner,
    /// lease_ms): returns 0 from the script unless the caller now holds the lease.
    static let takeLease = """
        \(now)
        local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if not score then return 0 end
        local cur = redis.call('HGET', KEYS[2], ARGV[1])
        if cur and tonumber(score) > now then return 0 end
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
        """

    /// KEYS: pending, owners, msg, body.  ARGV: id, owner, lease_ms
    /// `claim`, and on success the message record and body in the same round trip:
    /// returns 0, or {HGETALL msg, body}.
    static let claimAndLoad = RedisScript("""
        \(takeLease)
        return {redis.call('HGETALL', KEYS[3]), redis.call('GET', KEYS[4])}
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

    /// KEYS: pending_in, owners_in, msg, ev, global, pending_out, body
    /// ARGV: id, owner, mode (forward|done|wait), delay_ms, global_maxlen, retention_s, body_retention_s, n_events,
    ///       events…, then field/value pairs for the message hash.
    /// forward: leave the stage, enter pending_out with deadline now+delay.
    /// done:    leave the stage; the records expire after the retention time.
    /// wait:    stay in the stage, unowned, until now+delay (a retry time).
    /// Returns 1 when recorded, 0 when the caller no longer holds the lease (nothing changed).
    static let commit = RedisScript("""
        \(now)
        local id = ARGV[1]
        if not redis.call('ZSCORE', KEYS[1], id) then return 0 end
        if redis.call('HGET', KEYS[2], id) ~= ARGV[2] then return 0 end
        local mode = ARGV[3]
        local delay = tonumber(ARGV[4])
        local n = tonumber(ARGV[8])
        for i = 9, 8 + n do
          redis.call('XADD', KEYS[4], '*', 'e', ARGV[i])
          redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[i])
        end
        local fields = {}
        for i = 9 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
        if #fields > 0 then redis.call('HSET', KEYS[3], unpack(fields)) end
        if mode == 'forward' then
          redis.call('ZREM', KEYS[1], id)
          redis.call('HDEL', KEYS[2], id)
          redis.call('ZADD', KEYS[6], now + delay, id)
        elseif mode == 'done' then
          redis.call('ZREM', KEYS[1], id)
          redis.call('HDEL', KEYS[2], id)
          redis.call('HSET', KEYS[3], 'state', 'done', 'finished', now)
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
