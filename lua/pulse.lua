#!lua name=pulse
--[[
pulse — Redis Functions library (Redis >= 7.0) for the pulsegate gateway.

Load:    redis-cli -x FUNCTION LOAD REPLACE < lua/pulse.lua
Full documentation: lua/README.md (key layout, arguments, errors, rules).

Functions
  FCALL    pulse_ingest   1 <prefix>:{<persona_id>} <event-json> [<options-json>]
           -> stream id (string) of the event's stream entry
  FCALL_RO pulse_snapshot 1 <prefix>:{<persona_id>} [<options-json>]
           -> JSON string (atomic snapshot of the persona)
  FCALL_RO pulse_variant  1 <prefix>:{<persona_id>} <variant_id> [<options-json>]
           -> JSON string of one variant's decoded state, or nil
  FCALL_RO pulse_version  0
           -> library version string
  FCALL    pulse_publish  1 <prefix>:{<namespace>:<id>} <message-json>
           -> stream id (the message's "offset") when the namespace keeps
              history, else nil; the message is published either way

Channels of other namespaces (the gateway's channels config, passed in as
CONFIGURED.channels = {<namespace> = <history length>}): B = KEYS[1] =
"<prefix>:{<namespace>:<id>}"; B:stream (fields m, t=<message type>) when the
history length is > 0, trimmed MAXLEN ~ history; B:events receives every m.

Key layout. B = KEYS[1] = "<prefix>:{<persona_id>}". Every key is B plus a
suffix, so all keys of a persona share the {persona_id} cluster hash tag.
  B:stream          STREAM  one entry per event; fields m=<published JSON>,
                            t=<event_type>, v=<variant_id>[, p=<pattern>];
                            explicit ids, XADD MAXLEN ~ stream_maxlen
  B:events          (pub/sub channel, not a key) receives every m
  B:persona         HASH    total_variants, active_variants, er_sum_u (sum of
                            round(current_er*1e6) over active variants),
                            kills:<YYYY-MM-DD>, kill_ms_sum:<YYYY-MM-DD>
  B:v:<variant_id>  HASH    variant_id, content, predicted_er, pattern_used
                            ("" = none), posted_at, posted_id, status
                            (active|killed),
                            [kill_reason, final_er, sample_size, killed_at,
                            time_to_kill_ms, kill_id],
                            st = struct.pack('>d'x11: views, inter, er_u,
                                 last_updated, wm, w5v, w5i, w15v, w15i,
                                 w60v, w60i) -- the counters (decoded by
                                 pulse_variant / pulse_snapshot; binary is
                                 ~10x cheaper to decode than text);
                                 er_u = round(current_er*1e6); wm = newest
                                 bucket minute (-1: none); wN* = view and
                                 interaction deltas over the N minutes
                                 ending at wm,
                            r<0..59> = struct.pack('>ddd', minute,
                                 view_delta, interaction_delta) -- per-minute
                                 bucket ring, slot = minute % 60,
                                 minute = floor(ts / 60000)
  B:active          ZSET    active variant ids, score posted_at
  B:posted          ZSET    posted variant ids, score posted_at (kill-rate window)
  B:killed          ZSET    killed variant ids, score posted_at (kill-rate window)
  B:kills           ZSET    killed variant ids, score killed_at (newest 100)
  B:patterns        ZSET    pattern names, score = newest posted_at using it
  B:pat:<pattern>   ZSET    variant ids that used the pattern, score posted_at

Expiry / pruning
  r<slot>     a 60-slot ring: a minute's bucket overwrites the one 60 min older.
  B:v:<id>    EXPIRE killed_ttl_s (default 7 d) when killed; no TTL while
              active unless variant_ttl_s > 0 (then refreshed on each event).
  B:pat:*, B:patterns   pruned by score + PEXPIRE pattern_window_ms on each post.
  B:posted    pruned by score + PEXPIRE kill_rate_window_ms on each post.
  B:killed    pruned by score + PEXPIRE kill_rate_window_ms on each kill.
  B:kills     trimmed to 100 members, EXPIRE killed_ttl_s on each kill.
  B:persona   kills:/kill_ms_sum: fields of days older than 7 days HDEL'd on kill.
  B:stream    MAXLEN ~ stream_maxlen.   B:persona, B:active: no TTL.

Stream ids: the message stored in B:stream (and published) contains its own
id ("offset"), so ids are chosen before XADD: max(TIME, last id) with the
next sequence number. The last id per persona is cached in the Lua state
(an optimisation only); XADD itself enforces monotonicity, and when it
refuses the id (cache cold or behind: restart, failover, another writer) the
real last-generated-id is read with XINFO STREAM and the XADD retried. XADD
is the first write of every ingest, so a failure leaves nothing changed.

NB: Redis runs library code at FUNCTION LOAD in a sandbox without redis.call,
cjson, math, string, ...; they are bound to upvalues by init() on first call.
]]

local VERSION = '1'

-- The audit's consumer group ('' = no audit), set from DEFAULTS by init().
local AUDIT_GROUP
-- PUBLISH, or SPUBLISH when the gateway loaded the library into a Redis
-- Cluster (CONFIGURED.sharded): the persona's channel carries its hash
-- tag, so it lives on the node that owns the persona's keys.
local PUBLISH_CMD = 'PUBLISH'

-- Globals cached in upvalues by init() (~25 ns saved per global access in the
-- Lua 5.1 VM; the load-time sandbox does not expose them).
local floor, fmt, smatch, tostr, tonum, typ, jnull, jdecode, jencode, rcall, rpcall, spack, sunpack
local sfind, sgsub, jlenient

local merge_configured                   -- defined with DEFAULTS, below

local function init()
  fmt, smatch = string.format, string.match
  sfind, sgsub = string.find, string.gsub
  tostr, tonum, typ = tostring, tonumber, type
  jnull, jencode = cjson.null, cjson.encode
  -- Callers' JSON is decoded by an instance of our own (cjson.new), told to
  -- refuse what Redis' cjson reads by default but JSON does not have (hex,
  -- inf/nan, a leading '+', leading zeros), so the shared instance that
  -- other libraries and EVAL scripts use keeps its settings. The lenient
  -- one only tells a number error from malformed JSON (see decode_json).
  local strict = cjson.new()
  strict.decode_invalid_numbers(false)
  jdecode, jlenient = strict.decode, cjson.decode
  rcall, rpcall = redis.call, redis.pcall
  spack, sunpack = struct.pack, struct.unpack
  merge_configured()
  -- Last: callers run init() while `floor` is unset, so a refused
  -- CONFIGURED fails every call, not only the first one.
  floor = math.floor
end

local MAX_INT = 99999999999999           -- 1e14 - 1: counts and ms timestamps
local MINUTE_MS = 60000
local DAY_MS = 86400000
local RING = 60                          -- per-minute buckets kept (minutes)
local KILL_DAYS_KEPT = 8                 -- day of the kill + 7 previous days
local RECENT_KILLS_KEPT = 100
local MAX_ID_LEN = 128
local MAX_CONTENT_LEN = 65536
local MAX_REASON_LEN = 256
local ER_TOLERANCE = 1e-3
local ID_PATTERN = '^[A-Za-z0-9_%.:%-]+$'
-- Persona ids appear in the gateway's URLs and channel names: no ':'.
local PERSONA_PATTERN = '^[A-Za-z0-9_%.%-]+$'
-- binary layouts (struct.pack; doubles hold integers < 2^53 exactly). Parsing
-- text with string.match + tonumber costs ~10x more in the hot path.
local ST_FMT = '>ddddddddddd'   -- views inter er_u last_updated wm w5v w5i w15v w15i w60v w60i
local SLOT_FMT = '>ddd'         -- minute view_delta interaction_delta

-- Option name -> {min, max}. Unknown option names are rejected.
local OPTION_SPECS = {
  stream_maxlen             = {1, MAX_INT},
  pattern_window_ms         = {1, MAX_INT},
  pattern_fatigue_threshold = {0, MAX_INT},
  kill_rate_window_ms       = {1, MAX_INT},
  variant_ttl_s             = {0, MAX_INT},
  killed_ttl_s              = {1, MAX_INT},
  max_variants              = {0, MAX_INT},
  recent_kills              = {0, RECENT_KILLS_KEPT},
  now_ms                    = {0, MAX_INT},
  backlog_margin            = {0, MAX_INT},
  max_persona_id_len        = {1, MAX_ID_LEN},
}

-- Built-in defaults: what a call gets for an option it leaves out (now_ms
-- has none: TIME), and the audit's consumer group ('' = none; a group
-- nothing consumes would block ingest at the backlog bound, so it is not an
-- option). A gateway loads the library with its deployment's values as
-- `local CONFIGURED = {...};` put in front of line 2 (line numbers stay
-- those of this file; src/redis/functions.rs), merged over these by init().
local DEFAULTS = {
  stream_maxlen             = 100000,
  pattern_window_ms         = 86400000,
  pattern_fatigue_threshold = 5,
  kill_rate_window_ms       = 86400000,
  variant_ttl_s             = 0,
  killed_ttl_s              = 604800,
  max_variants              = 1000,
  recent_kills              = 20,
  backlog_margin            = 10000,
  max_persona_id_len        = 64,
  audit_group               = '',
  sharded                   = false,
  -- set only through CONFIGURED (not call options): the gateway's
  -- [[channels]] namespaces -> history length, and its largest publication
  channels                  = {},
  max_publish_bytes         = 1048576,
}

-- The gateway's table, if it was put in front. Loaded on its own, the name
-- is a global, and Redis refuses to read a missing global (at FUNCTION LOAD
-- too, where there is no pcall), so only a call tries it, under pcall.
local function configured() return CONFIGURED end

-- Runs on a call, with the full globals. A value the library would refuse
-- as an option fails the call rather than being dropped or let through.
merge_configured = function()
  local found, conf = pcall(configured)
  if found and conf ~= nil then         -- nil: a Redis that reads missing globals as nil
    for k, v in pairs(conf) do
      local spec = OPTION_SPECS[k]
      local ok
      if k == 'audit_group' then
        ok = type(v) == 'string'
      elseif k == 'sharded' then
        ok = type(v) == 'boolean'
      elseif k == 'channels' then
        ok = type(v) == 'table'
        for ns, n in pairs(ok and v or {}) do
          ok = ok and type(ns) == 'string' and string.match(ns, '^[a-z0-9_%-]+$') ~= nil and #ns <= 32
               and ns ~= 'persona' and ns ~= 'system'
               and type(n) == 'number' and n % 1 == 0 and n >= 0 and n <= MAX_INT
        end
      elseif k == 'max_publish_bytes' then
        ok = type(v) == 'number' and v % 1 == 0 and v >= 64 and v <= MAX_INT
      else
        ok = spec and type(v) == 'number' and v % 1 == 0 and v >= spec[1] and v <= spec[2]
      end
      if not ok then
        error('CONFIGURED.' .. tostring(k) .. ': not an option or out of range: ' .. tostring(v), 0)
      end
      DEFAULTS[k] = v
    end
  end
  AUDIT_GROUP = DEFAULTS.audit_group
  if DEFAULTS.sharded then PUBLISH_CMD = 'SPUBLISH' end
end

---------------------------------------------------------------------------
-- errors: raised as a tagged table and turned into redis.error_reply by
-- protect() (a plain error() would get a " script: ..." suffix appended).
-- Format: "<CODE> field=<field>: <what is wrong>"
---------------------------------------------------------------------------
local function raise(code, field, what)
  error({pulse_err = code .. ' field=' .. field .. ': ' .. what}, 0)
end

local function bad(field, what)
  raise('INVALID', field, what)
end

-- quote user input for an error message: bounded and printable ASCII (a
-- cut multi-byte character or a caller's invalid UTF-8 would make the
-- error reply itself undecodable for a client)
local function q(s)
  s = tostr(s)
  if #s > 64 then s = string.sub(s, 1, 64) .. '...' end
  return '"' .. string.gsub(s, '[%c"\\\128-\255]', '?') .. '"'
end

local function protect(fn)
  return function(keys, args)
    local ok, res = pcall(fn, keys, args)
    if ok then return res end
    if typ(res) == 'table' and res.pulse_err then
      return redis.error_reply(res.pulse_err)
    end
    error(res, 0)
  end
end

---------------------------------------------------------------------------
-- small helpers
---------------------------------------------------------------------------
local function r6(x) return floor(x * 1e6 + 0.5) / 1e6 end
local function r2(x) return floor(x * 100 + 0.5) / 100 end
-- Number formatting dominates the hot path (tostring/%.14g ~0.6us, %.0f ~1us,
-- %d ~0.2us per number), so integers are always formatted with %d (64-bit).
local function istr(n) return fmt('%d', n) end
-- JSON text of a float rounded to 6 decimals (tostring = %.14g, like cjson)
local function jf(x) return tostr(floor(x * 1e6 + 0.5) / 1e6) end

local function is_finite(x) return x == x and x ~= math.huge and x ~= -math.huge end
local function is_int(x) return typ(x) == 'number' and is_finite(x) and floor(x) == x end

local function days_to_civil(z)       -- days since 1970-01-01 -> y, m, d
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local ts_cache_sec, ts_cache_prefix      -- RFC 3339 text of the last second

local SLOT, SLOT_NAME = {}, {}           -- ring slot field names r0..r59
for i = 0, 59 do SLOT[i] = 'r' .. i; SLOT_NAME['r' .. i] = true end

local function rfc3339(ms)            -- 2026-11-22T03:10:00.123Z
  local sec = floor(ms / 1000)
  local frac = ms - sec * 1000
  if sec ~= ts_cache_sec then
    local days = floor(sec / 86400)
    local rem = sec - days * 86400
    local y, mo, d = days_to_civil(days)
    local h = floor(rem / 3600); rem = rem - h * 3600
    local mi = floor(rem / 60)
    ts_cache_prefix = fmt('%04d-%02d-%02dT%02d:%02d:%02d.', y, mo, d, h, mi, rem - mi * 60)
    ts_cache_sec = sec
  end
  return fmt('%s%03dZ', ts_cache_prefix, frac)
end

local function day_str(ms)            -- UTC day, YYYY-MM-DD
  local y, mo, d = days_to_civil(floor(ms / DAY_MS))
  return fmt('%04d-%02d-%02d', y, mo, d)
end

local function window_label(ms)
  if ms % 3600000 == 0 then return istr(ms / 3600000) .. 'h' end
  if ms % 60000 == 0 then return istr(ms / 60000) .. 'm' end
  if ms % 1000 == 0 then return istr(ms / 1000) .. 's' end
  return istr(ms) .. 'ms'
end

local function now_ms()
  local t = rcall('TIME')
  return tonum(t[1]) * 1000 + floor(tonum(t[2]) / 1000)
end

local function hash_map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end

-- JSON array text from a list of already-encoded elements ("[]" when empty;
-- cjson 2.1.0 in Redis 7.0 encodes an empty table as {})
local function json_array(encoded)
  return '[' .. table.concat(encoded, ',') .. ']'
end

local function ratio(i, v)
  if v > 0 then return r6(i / v) end
  return jnull
end

local function jratio(i, v)              -- ratio() as JSON text
  if v > 0 then return jf(i / v) end
  return 'null'
end

---------------------------------------------------------------------------
-- JSON text from callers. Redis' cjson stores a string's bytes as they
-- come (invalid UTF-8 included, re-encoded as is), stops at a NUL (what
-- follows is ignored), and strtod reads number forms JSON does not have.
-- One stored invalid byte made every later snapshot of its persona
-- undecodable for the gateway, so everything a caller passes is checked
-- here, before anything is read or written: only valid UTF-8 and RFC 8259
-- numbers enter Redis.
---------------------------------------------------------------------------
-- The fast path: printable ASCII only (~0.7 us for a 130-byte event; a
-- single-range class is about twice as fast as one listing tab/LF/CR too).
local PRINTABLE = '^[ -~]*$'
-- Bytes JSON text never holds raw (they must be escaped): C0 controls
-- other than tab, LF and CR (which are whitespace outside strings).
local CONTROL = '[%z\1-\8\11\12\14-\31]'
-- Well-formed UTF-8 sequences (RFC 3629: no overlong forms, no surrogates,
-- nothing above U+10FFFF), by lead byte.
local UTF8_SEQS = {
  '[\194-\223][\128-\191]',
  '[\225-\236\238\239][\128-\191][\128-\191]',
  '\224[\160-\191][\128-\191]',
  '\237[\128-\159][\128-\191]',
  '[\241-\243][\128-\191][\128-\191][\128-\191]',
  '\240[\144-\191][\128-\191][\128-\191]',
  '\244[\128-\143][\128-\191][\128-\191]',
}

-- t: text as cut by text_problem. Each well-formed sequence becomes one
-- ASCII byte (not nothing: removing it could join the bytes around it into
-- a sequence); a byte >= 0x80 left after all passes was in none. A lead
-- byte fixes its sequence's length and continuation bytes are no lead
-- bytes, so the order of the passes does not matter; the common ones come
-- first and the passes stop once nothing non-ASCII is left.
local function utf8_valid(t)
  if not sfind(t, '[\128-\255]') then return true end
  for i = 1, #UTF8_SEQS do
    t = sgsub(t, UTF8_SEQS[i], '_')
    if not sfind(t, '[\128-\255]') then return true end
  end
  return false
end

-- What is wrong with the bytes of s as JSON text, or nil. Lua's matcher
-- costs ~20 ns for every position an unanchored pattern is tried at, so
-- the runs of ASCII JSON allows are cut out first (a greedy run costs a few
-- ns a byte; a space keeps the bytes around a run apart) and the checks
-- run over what is left: controls and non-ASCII bytes, usually far fewer.
-- Measured: ~40 us for 1 KB of accented Latin text, ~100 us for 1 KB of
-- CJK, against ~120-230 us for the same passes over the whole text.
local function text_problem(s)
  if sfind(s, PRINTABLE) then return nil end
  local t = sgsub(s, '[\t\n\r -\127]+', ' ')
  if sfind(t, CONTROL) then return 'contains a raw control character (JSON escapes them as \\u00XX)' end
  if not utf8_valid(t) then return 'is not valid UTF-8' end
  return nil
end

-- The field name an error reports for member `name` of `base` (event or
-- options): only names that cannot break the error format are echoed.
local function member_field(base, name)
  if typ(name) ~= 'string' or #name > 64 or not smatch(name, '^[A-Za-z0-9_.-]+$') then return base end
  if base == 'event' then return name end
  return base .. '.' .. name
end

-- The innermost member name whose string (value or name) has bad text: the
-- name, or true when it has none (top level, or the name itself is bad).
local function bad_text_member(v, name)
  if typ(v) == 'string' then return text_problem(v) and (name or true) or nil end
  if typ(v) ~= 'table' then return nil end
  for k, x in pairs(v) do
    if typ(k) == 'string' and text_problem(k) then return name or true end
    local r = bad_text_member(x, typ(k) == 'string' and k or name)
    if r then return r end
  end
  return nil
end

-- raw with escapes and string contents blanked, same length: a '"' in it
-- delimits a string, and what is outside strings keeps its position.
local function blank_strings(raw)
  local s1 = sgsub(raw, '\\.', '__')
  return s1, (sgsub(s1, '"[^"]*"', function(m) return '"' .. string.rep('_', #m - 2) .. '"' end))
end

-- Refuses the number token at byte pos of raw, naming the member it is in.
local function not_a_number(raw, pos, base)
  local s1, s3 = blank_strings(string.sub(raw, 1, pos - 1))
  local name
  for a, b in string.gmatch(s3, '()"_*"()%s*:') do name = string.sub(s1, a + 1, b - 2) end
  bad(member_field(base, name), 'not a JSON number: ' .. q(smatch(raw, '^[%w.+-]*', pos)))
end

-- strtod also reads '5.', '-.5' and '1.e5'; JSON wants a digit on both
-- sides of a '.'. Dots between digits (or none) are the fast path, found
-- with plain finds; any other dot is looked at outside strings.
local function check_dots(raw, base)
  local i = sfind(raw, '.', 1, true)
  while i do
    local a, c = string.byte(raw, i - 1), string.byte(raw, i + 1)
    if i == 1 or not (a and c and a >= 48 and a <= 57 and c >= 48 and c <= 57) then
      local _, s3 = blank_strings(raw)
      local p = sfind(s3, '%.%D') or sfind(s3, '%D%.')
      if p and string.byte(s3, p) ~= 46 then p = p + 1 end
      if not p then return end
      not_a_number(raw, smatch(string.sub(s3, 1, p), '()[%w.+-]*$'), base)
    end
    i = sfind(raw, '.', i + 1, true)
  end
end

-- Decodes JSON text a caller passed as `base` ('event' or 'options'),
-- refusing what is not RFC 8259 JSON in valid UTF-8. Errors name the member.
local function decode_json(raw, base)
  local ok, v = pcall(jdecode, raw)
  if not ok then
    if pcall(jlenient, raw) then       -- only a number form told them apart
      not_a_number(raw, tonum(smatch(tostr(v), 'at character (%d+)')) or 1, base)
    end
    bad(base, 'malformed JSON: ' .. q(v))
  end
  local problem = text_problem(raw)
  if problem then bad(member_field(base, bad_text_member(v)), problem) end
  check_dots(raw, base)
  return v
end

---------------------------------------------------------------------------
-- validation
---------------------------------------------------------------------------
-- Per persona base (KEYS[1]) record, cached in the Lua state: the derived key
-- names and the last stream id generated (ms, seq). A cache only: bounded,
-- rebuilt after FUNCTION LOAD / restart, and ids are verified by XADD.
local bases, bases_count = {}, 0

local function bad_persona(persona, max_len)
  bad('persona_id', 'must be 1..' .. max_len .. ' chars of [A-Za-z0-9_.-], got ' .. q(persona))
end

local function check_base(keys)
  if #keys ~= 1 then bad('keys', 'expected exactly 1 key <prefix>:{<persona_id>}, got ' .. #keys) end
  local base = keys[1]
  local rec = bases[base]
  if rec then return rec end
  -- key names reach the gateway and its logs as text
  local problem = text_problem(base)
  if problem then bad('key', problem) end
  local prefix, persona = smatch(base, '^(.+):{([^{}]*)}$')
  if not prefix or string.find(prefix, '[{}]') then
    bad('key', 'must look like <prefix>:{<persona_id>}, got ' .. q(base))
  end
  if #persona < 1 or #persona > MAX_ID_LEN or not smatch(persona, PERSONA_PATTERN) then
    bad_persona(persona, MAX_ID_LEN)
  end
  bases_count = bases_count + 1
  if bases_count > 100000 then bases, bases_count = {}, 1 end
  rec = {base = base, skey = base .. ':stream', ch = base .. ':events', pkey = base .. ':persona',
         vpre = base .. ':v:', persona = persona, plen = #persona}
  bases[base] = rec
  return rec
end

-- The deployment's limit (max_persona_id_len, the gateway's), once options are read.
local function check_persona_len(rec, opts)
  if rec.plen > opts.max_persona_id_len then bad_persona(rec.persona, opts.max_persona_id_len) end
end

local function present(v) return v ~= nil and v ~= jnull end

local function shown(v)
  if typ(v) == 'string' then return q(v) end
  local ok, s = pcall(cjson.encode, v)
  return ok and q(s) or q(typ(v))
end

local function req_id(ev, field)
  local v = ev[field]
  if not present(v) then bad(field, 'missing') end
  if typ(v) ~= 'string' then bad(field, 'must be a string, got ' .. shown(v)) end
  if #v < 1 or #v > MAX_ID_LEN or not smatch(v, ID_PATTERN) then
    bad(field, 'must be 1..128 chars of [A-Za-z0-9_.:-], got ' .. q(v))
  end
  return v
end

local function req_count(ev, field)
  local v = ev[field]
  if not present(v) then bad(field, 'missing') end
  if not is_int(v) or v < 0 or v > MAX_INT then
    bad(field, 'must be a non-negative integer <= ' .. istr(MAX_INT) .. ', got ' .. shown(v))
  end
  return v
end

local function opt_ms(ev, field)
  local v = ev[field]
  if not present(v) then return nil end
  if not is_int(v) or v < 0 or v > MAX_INT then
    bad(field, 'must be an integer number of milliseconds since the epoch in [0, ' ..
        istr(MAX_INT) .. '], got ' .. shown(v))
  end
  return v
end

local function req_number(ev, field, lo, hi)
  local v = ev[field]
  if not present(v) then bad(field, 'missing') end
  if typ(v) ~= 'number' or not is_finite(v) then bad(field, 'must be a finite number, got ' .. shown(v)) end
  if v < lo or (hi and v > hi) then
    bad(field, 'must be in [' .. lo .. ', ' .. (hi and tostr(hi) or 'inf') .. '], got ' .. tostr(v))
  end
  return v
end

local function req_text(ev, field, maxlen, allow_empty)
  local v = ev[field]
  if not present(v) then bad(field, 'missing') end
  if typ(v) ~= 'string' then bad(field, 'must be a string, got ' .. shown(v)) end
  if #v > maxlen then bad(field, 'longer than ' .. maxlen .. ' bytes') end
  if not allow_empty and #v == 0 then bad(field, 'must not be empty') end
  return v
end

local function is_object(t, raw)
  return typ(t) == 'table' and t[1] == nil and not (next(t) == nil and smatch(raw, '^%s*%['))
end

local opt_cache_raw, opt_cache_val       -- last options string and its parse

local function parse_options(raw)
  if raw == nil or raw == '' then raw = '{}' end
  if raw == opt_cache_raw then return opt_cache_val end
  local o = decode_json(raw, 'options')
  if not is_object(o, raw) then bad('options', 'must be a JSON object') end
  local res = {}
  for k, v in pairs(o) do
    local spec = OPTION_SPECS[k]
    if not spec then bad('options.' .. tostr(k), 'unknown option') end
    if v ~= jnull then
      if not is_int(v) or v < spec[1] or v > spec[2] then
        bad('options.' .. k, 'must be an integer in [' .. istr(spec[1]) .. ', ' .. istr(spec[2]) ..
            '], got ' .. shown(v))
      end
      res[k] = v
    end
  end
  for k in pairs(OPTION_SPECS) do
    if res[k] == nil then res[k] = DEFAULTS[k] end
  end
  res.maxlen_s = istr(res.stream_maxlen)
  opt_cache_raw, opt_cache_val = raw, res
  return res
end

---------------------------------------------------------------------------
-- stream ids & appending
---------------------------------------------------------------------------
-- the stream's real last-generated-id -> ms, seq (nil when no stream)
local function stream_last_id(skey)
  if rcall('EXISTS', skey) == 0 then return nil end
  local info = rcall('XINFO', 'STREAM', skey)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local a, b = smatch(info[i + 1], '^(%d+)%-(%d+)$')
      return tonum(a), tonum(b)
    end
  end
  return nil
end

-- first id after (lms, lseq) at server time now
local function id_after(lms, lseq, now)
  if lms and lms >= now then return lms, lseq + 1 end
  return now, 0
end

-- message envelope; data is the data object's JSON text
local function envelope(ts, id, data)
  return '{"type":"variant_update","timestamp":"' .. rfc3339(ts) .. '","offset":"' .. id ..
         '","data":' .. data .. '}'
end

local function xadd(call, skey, maxlen, id, msg, t, v, p)
  if p then
    return call('XADD', skey, 'MAXLEN', '~', maxlen, id, 'm', msg, 't', t, 'v', v, 'p', p)
  end
  return call('XADD', skey, 'MAXLEN', '~', maxlen, id, 'm', msg, 't', t, 'v', v)
end

-- Trimming must never remove an entry a consumer group (the audit trail)
-- has not acknowledged: refuse the event while any group's un-audited
-- backlog (undelivered lag + pending) would come within backlog_margin of
-- stream_maxlen. Runs after validation, as the first write: a refusal
-- changes nothing, and a stream it creates (with the audit group) is about
-- to get its first entry.
local function check_backlog(ctx, skey, n)
  local groups = rpcall('XINFO', 'GROUPS', skey)       -- an error table when no stream yet
  if typ(groups) ~= 'table' or groups.err then
    if AUDIT_GROUP ~= '' then rcall('XGROUP', 'CREATE', skey, AUDIT_GROUP, '0', 'MKSTREAM') end
    return
  end
  if #groups == 0 then return end
  local limit = ctx.opts.stream_maxlen - ctx.opts.backlog_margin
  if limit < 1 then limit = 1 end
  for _, g in ipairs(groups) do
    -- read the flat field list in place: a table per group per call is
    -- measurable on the hot path
    local name, lag, pending
    for i = 1, #g, 2 do
      local k = g[i]
      if k == 'lag' then lag = tonumber(g[i + 1])
      elseif k == 'pending' then pending = tonumber(g[i + 1])
      elseif k == 'name' then name = g[i + 1] end
    end
    if not lag then lag = rcall('XLEN', skey) end   -- unknown lag: assume all undelivered
    local backlog = lag + (pending or 0)
    if backlog + n > limit then
      raise('BACKLOG', 'stream', 'the audit backlog of group ' .. q(name) .. ' is ' .. istr(backlog) ..
            ' entries, at the limit of ' .. istr(limit) .. ' (stream_maxlen - backlog_margin); retry when it drains')
    end
  end
end

-- Appends items {t=, v=, p=, ts=, data=<JSON text>} with consecutive ids
-- and their final messages. Returns ids, msgs. First write of an ingest.
local function append(ctx, items)
  local rec = ctx.rec
  local skey = rec.skey
  local maxlen = ctx.opts.maxlen_s
  check_backlog(ctx, skey, #items)
  local ms, seq = id_after(rec.ms, rec.seq, ctx.now)
  for attempt = 1, 2 do
    local ids, msgs = {}, {}
    for i = 1, #items do
      local it = items[i]
      ids[i] = fmt('%d-%d', ms, seq + i - 1)
      msgs[i] = envelope(it.ts, ids[i], it.data)
    end
    local it = items[1]
    local r = xadd(attempt == 1 and rpcall or rcall, skey, maxlen, ids[1], msgs[1], it.t, it.v, it.p)
    if typ(r) ~= 'table' or not r.err then
      for i = 2, #items do
        it = items[i]
        xadd(rcall, skey, maxlen, ids[i], msgs[i], it.t, it.v, it.p)
      end
      rec.ms, rec.seq = ms, seq + #items - 1
      return ids, msgs
    end
    -- id refused (cache cold or behind the stream): resync and retry once
    local lms, lseq = stream_last_id(skey)
    ms, seq = id_after(lms, lseq, ctx.now)
  end
end

-- The one place that publishes (PUBLISH or SPUBLISH, see PUBLISH_CMD).
local function publish_to(ch, msg)
  rcall(PUBLISH_CMD, ch, msg)
end

local function publish(ctx, msgs)
  local ch = ctx.rec.ch
  for i = 1, #msgs do publish_to(ch, msgs[i]) end
end

---------------------------------------------------------------------------
-- variant hot state and per-minute buckets
---------------------------------------------------------------------------
-- st -> views, inter, er_u, last_updated, wm (nil if no update yet),
--       w5v, w5i, w15v, w15i, w60v, w60i
local function parse_st(st)
  if st and #st == 88 then
    local a, b, c, d, e, f, g, h, i, j, k = sunpack(ST_FMT, st)
    if e < 0 then e = nil end
    return a, b, c, d, e, f, g, h, i, j, k
  end
  return 0, 0, 0, 0, nil, 0, 0, 0, 0, 0, 0
end

-- ring slot value -> minute, dv, di
local function parse_slot(s)
  if s and #s == 24 then
    local m, v, i = sunpack(SLOT_FMT, s)
    return m, v, i
  end
  return nil, 0, 0
end

-- HGETALL of a variant hash -> views map, interactions map (minute -> delta)
local function load_buckets(flat)
  local bv, bi = {}, {}
  for x = 1, #flat, 2 do
    if SLOT_NAME[flat[x]] then
      local m, v, i = parse_slot(flat[x + 1])
      if m then bv[m], bi[m] = v, i end
    end
  end
  return bv, bi
end

-- sums of the buckets over the 5/15/60 minutes ending at minute m
local function window_sums(bv, bi, m)
  local v5, i5, v15, i15, v60, i60 = 0, 0, 0, 0, 0, 0
  for k, v in pairs(bv) do
    local age = m - k
    if age >= 0 and age < RING then
      local i = bi[k]
      v60, i60 = v60 + v, i60 + i
      if age < 15 then
        v15, i15 = v15 + v, i15 + i
        if age < 5 then v5, i5 = v5 + v, i5 + i end
      end
    end
  end
  return v5, i5, v15, i15, v60, i60
end

local function variant_ttl(ctx, vkey)
  local ttl = ctx.opts.variant_ttl_s
  if ttl > 0 then rcall('EXPIRE', vkey, istr(ttl)) end
end

local function unknown_variant(vid)
  raise('UNKNOWN_VARIANT', 'variant_id', 'no variant ' .. q(vid) .. ' for this persona')
end

---------------------------------------------------------------------------
-- event handlers: validate + read, compute, append (first write), write,
-- publish
---------------------------------------------------------------------------
local function on_variant_posted(ctx, ev, vid)
  local content = req_text(ev, 'content', MAX_CONTENT_LEN, true)
  local pred = req_number(ev, 'predicted_er', 0, 1)
  local pattern = nil
  if present(ev.pattern_used) then pattern = req_id(ev, 'pattern_used') end
  local posted_at = opt_ms(ev, 'posted_at') or ctx.ts
  local opts = ctx.opts
  local base = ctx.base
  local vkey = base .. ':v:' .. vid
  local pkey = base .. ':persona'
  local pred_s = tostr(pred)

  local cur = rcall('HMGET', vkey, 'status', 'content', 'predicted_er', 'pattern_used', 'posted_id')
  if cur[1] then
    -- a retry of the same post is a no-op returning the original id
    if cur[2] == content and cur[3] == pred_s and cur[4] == (pattern or '') and cur[5] then
      return cur[5]
    end
    raise('DUPLICATE', 'variant_id', 'variant ' .. q(vid) ..
          ' already exists with different content/predicted_er/pattern_used')
  end

  -- pattern fatigue: uses of the pattern in (posted_at - W, posted_at]
  local W = opts.pattern_window_ms
  local fatigue_count = nil
  if pattern then
    local before = rcall('ZCOUNT', base .. ':pat:' .. pattern, '(' .. istr(posted_at - W), istr(posted_at))
    if before == opts.pattern_fatigue_threshold then fatigue_count = before + 1 end
  end

  local items = {{t = 'variant_posted', v = vid, ts = ctx.ts, data = jencode({
    event_type = 'variant_posted', variant_id = vid, content = content,
    predicted_er = pred, pattern_used = pattern or jnull, posted_at = posted_at,
    status = 'active', view_count = 0, interaction_count = 0, current_er = 0,
  })}}
  if fatigue_count then
    items[2] = {t = 'pattern_fatigue', v = vid, p = pattern, ts = ctx.ts, data = jencode({
      event_type = 'pattern_fatigue', pattern = pattern, usage_count = fatigue_count,
      threshold = opts.pattern_fatigue_threshold, window = window_label(W),
      window_ms = W, variant_id = vid,
    })}
  end

  local ids, msgs = append(ctx, items)

  local ps = istr(posted_at)
  rcall('HSET', vkey, 'variant_id', vid, 'content', content, 'predicted_er', pred_s,
        'pattern_used', pattern or '', 'posted_at', ps, 'posted_id', ids[1],
        'status', 'active', 'st', spack(ST_FMT, 0, 0, 0, ctx.ts, -1, 0, 0, 0, 0, 0, 0))
  variant_ttl(ctx, vkey)
  rcall('HINCRBY', pkey, 'total_variants', '1')
  rcall('HINCRBY', pkey, 'active_variants', '1')
  rcall('ZADD', base .. ':active', ps, vid)

  local KW = opts.kill_rate_window_ms
  local postedkey = base .. ':posted'
  rcall('ZADD', postedkey, ps, vid)
  rcall('ZREMRANGEBYSCORE', postedkey, '-inf', istr(posted_at - KW))
  rcall('PEXPIRE', postedkey, istr(KW))
  rcall('ZREM', base .. ':killed', vid)

  if pattern then
    local patkey = base .. ':pat:' .. pattern
    local idx = base .. ':patterns'
    local cutoff = istr(posted_at - W)
    rcall('ZADD', patkey, ps, vid)
    rcall('ZREMRANGEBYSCORE', patkey, '-inf', cutoff)
    rcall('PEXPIRE', patkey, istr(W))
    rcall('ZADD', idx, 'GT', ps, pattern)
    local old = rcall('ZRANGEBYSCORE', idx, '-inf', cutoff)
    for i = 1, #old do rcall('DEL', base .. ':pat:' .. old[i]) end
    if #old > 0 then rcall('ZREMRANGEBYSCORE', idx, '-inf', cutoff) end
    rcall('PEXPIRE', idx, istr(W))
  end

  publish(ctx, msgs)
  return ids[1]
end

-- The hot path: kept to TIME, HMGET, XINFO GROUPS, XADD, [HSET, HINCRBY,] PUBLISH.
local PERF_FMT = '{"type":"variant_update","timestamp":"%s","offset":"%s","data":{' ..
  '"event_type":"performance_update","variant_id":"%s","status":"%s","view_count":%d,' ..
  '"interaction_count":%d,"current_er":%s,"predicted_er":%s,"performance_vs_prediction":%s,' ..
  '"er_5m":%s,"er_15m":%s,"er_60m":%s,"view_delta":%d,"interaction_delta":%d,"stale":%s,' ..
  '"last_updated":%d}}'

local function on_performance_update(ctx, ev, vid)
  local views, inter = ev.view_count, ev.interaction_count
  if typ(views) ~= 'number' or not (views >= 0 and views <= MAX_INT) or floor(views) ~= views then
    req_count(ev, 'view_count')
  end
  if typ(inter) ~= 'number' or not (inter >= 0 and inter <= MAX_INT) or floor(inter) ~= inter then
    req_count(ev, 'interaction_count')
  end
  local er_in = ev.engagement_rate
  if er_in ~= nil and er_in ~= jnull then
    if typ(er_in) ~= 'number' or not is_finite(er_in) then
      bad('engagement_rate', 'must be a finite number, got ' .. shown(er_in))
    end
    local expect = views > 0 and inter / views or 0
    if math.abs(er_in - expect) > ER_TOLERANCE then
      bad('engagement_rate', fmt(
        '%.6g does not match interaction_count/view_count = %.6g (tolerance 1e-3)', er_in, expect))
    end
  end
  local rec, ts = ctx.rec, ctx.ts
  local vkey = rec.vpre .. vid
  local m = floor(ts / MINUTE_MS)
  local fm = SLOT[m % RING]

  -- one read: status, prediction, hot state, and the ring slots of minutes
  -- m (this bucket / the one leaving the 60-min window), m-5 and m-15 (the
  -- ones leaving the 5- and 15-min windows on a one-minute slide)
  local cur = rcall('HMGET', vkey, 'status', 'predicted_er', 'st', fm,
                    SLOT[(m - 5) % RING], SLOT[(m - 15) % RING])
  local status = cur[1]
  if not status then unknown_variant(vid) end
  local pred = tonum(cur[2]) or 0
  local old_v, old_i, old_u, old_lu, E, v5, i5, v15, i15, v60, i60 = parse_st(cur[3])

  -- out-of-order rule: totals are max-merged per field; only increments count
  local new_v = views > old_v and views or old_v
  local new_i = inter > old_i and inter or old_i
  local dv, di = new_v - old_v, new_i - old_i
  local stale = dv == 0 and di == 0

  -- rolling windows end at wm = the newest minute the variant got an update for
  local sm, sv, si = parse_slot(cur[4])
  local newE = m
  if not E then
    v5, i5, v15, i15, v60, i60 = 0, 0, 0, 0, 0, 0
  elseif m <= E then
    newE = E                                 -- same minute or a late event
  elseif m == E + 1 then                     -- slide by one minute
    local km, kv, ki = parse_slot(cur[5])
    if km == m - 5 then v5, i5 = v5 - kv, i5 - ki end
    km, kv, ki = parse_slot(cur[6])
    if km == m - 15 then v15, i15 = v15 - kv, i15 - ki end
    if sm == m - RING then v60, i60 = v60 - sv, i60 - si end
  else                                       -- jump: recompute from the ring
    local bv, bi = load_buckets(rcall('HGETALL', vkey))
    v5, i5, v15, i15, v60, i60 = window_sums(bv, bi, m)
  end
  local slot_val = nil
  if not stale and m > newE - RING then
    if sm ~= m then sv, si = 0, 0 end        -- slot held an older minute
    slot_val = spack(SLOT_FMT, m, sv + dv, si + di)
    local age = newE - m
    v60, i60 = v60 + dv, i60 + di
    if age < 15 then
      v15, i15 = v15 + dv, i15 + di
      if age < 5 then v5, i5 = v5 + dv, i5 + di end
    end
  end

  local cer = new_v > 0 and new_i / new_v or 0
  local new_u = floor(cer * 1e6 + 0.5)
  local lu = old_lu
  if not stale and ts > old_lu then lu = ts end
  local ce = tostr(new_u / 1e6)
  local pvp = pred > 0 and jf((cer - pred) / pred) or 'null'
  local e5 = v5 > 0 and jf(i5 / v5) or 'null'
  local e15 = v15 > 0 and jf(i15 / v15) or 'null'
  local e60 = v60 > 0 and jf(i60 / v60) or 'null'
  local stale_s = stale and 'true' or 'false'
  local rfc = rfc3339(ts)

  -- XADD with the final message (hand-built JSON: variant_id and status need
  -- no escaping); see append() for the id rules
  local skey = rec.skey
  local maxlen = ctx.opts.maxlen_s
  check_backlog(ctx, skey, 1)
  local ms, seq = id_after(rec.ms, rec.seq, ctx.now)
  local id, msg
  for attempt = 1, 2 do
    id = fmt('%d-%d', ms, seq)
    msg = fmt(PERF_FMT, rfc, id, vid, status, new_v, new_i, ce, cur[2] or '0', pvp, e5, e15, e60,
              dv, di, stale_s, lu)
    local r = (attempt == 1 and rpcall or rcall)('XADD', skey, 'MAXLEN', '~', maxlen, id,
                                                 'm', msg, 't', 'performance_update', 'v', vid)
    if typ(r) ~= 'table' or not r.err then break end
    local lms, lseq = stream_last_id(skey)
    ms, seq = id_after(lms, lseq, ctx.now)
  end
  rec.ms, rec.seq = ms, seq

  if not stale then
    local st = spack(ST_FMT, new_v, new_i, new_u, lu, newE, v5, i5, v15, i15, v60, i60)
    if slot_val then
      rcall('HSET', vkey, 'st', st, fm, slot_val)
    else
      rcall('HSET', vkey, 'st', st)
    end
    if status == 'active' then
      if new_u ~= old_u then rcall('HINCRBY', rec.pkey, 'er_sum_u', fmt('%d', new_u - old_u)) end
      variant_ttl(ctx, vkey)
    end
  end

  publish_to(rec.ch, msg)
  return id
end

local function on_early_kill(ctx, ev, vid)
  local reason = req_text(ev, 'reason', MAX_REASON_LEN, false)
  local fer = req_number(ev, 'final_engagement_rate', 0, nil)
  local sample = req_count(ev, 'sample_size')
  local base = ctx.base
  local vkey = base .. ':v:' .. vid
  local pkey = base .. ':persona'
  local opts = ctx.opts

  local cur = rcall('HMGET', vkey, 'status', 'posted_at', 'kill_reason', 'kill_id', 'st', 'pattern_used')
  if not cur[1] then unknown_variant(vid) end
  if cur[1] == 'killed' then
    -- a retry of the same kill is a no-op returning the original id
    if cur[3] == reason and cur[4] then return cur[4] end
    raise('ALREADY_KILLED', 'variant_id', 'variant ' .. q(vid) .. ' was already killed with reason ' .. q(cur[3]))
  end
  local views, inters, er_u = parse_st(cur[5])

  local posted_at = tonum(cur[2]) or ctx.ts
  local ttk = ctx.ts - posted_at
  if ttk < 0 then ttk = 0 end
  local day = day_str(ctx.ts)

  local ids, msgs = append(ctx, {{t = 'early_kill', v = vid, ts = ctx.ts, data = jencode({
    event_type = 'early_kill', variant_id = vid, status = 'killed',
    kill_reason = reason, final_er = r6(fer), sample_size = sample,
    time_to_kill_minutes = r2(ttk / MINUTE_MS), killed_at = ctx.ts, posted_at = posted_at,
    current_er = er_u / 1e6, view_count = views, interaction_count = inters,
    pattern_used = (cur[6] and cur[6] ~= '') and cur[6] or jnull,
  })}})

  rcall('HSET', vkey, 'status', 'killed', 'kill_reason', reason, 'final_er', tostr(r6(fer)),
        'sample_size', istr(sample), 'killed_at', istr(ctx.ts), 'time_to_kill_ms', istr(ttk),
        'kill_id', ids[1])
  rcall('EXPIRE', vkey, istr(opts.killed_ttl_s))
  rcall('HINCRBY', pkey, 'active_variants', '-1')
  if er_u ~= 0 then rcall('HINCRBY', pkey, 'er_sum_u', istr(-er_u)) end
  rcall('HINCRBY', pkey, 'kills:' .. day, '1')
  rcall('HINCRBY', pkey, 'kill_ms_sum:' .. day, istr(ttk))
  -- prune day counters older than KILL_DAYS_KEPT days (ISO dates sort as text)
  local cutoff = day_str(ctx.ts - (KILL_DAYS_KEPT - 1) * DAY_MS)
  local fields = rcall('HKEYS', pkey)
  local old = nil
  for i = 1, #fields do
    local d = smatch(fields[i], '^kills:(.+)$') or smatch(fields[i], '^kill_ms_sum:(.+)$')
    if d and d < cutoff then
      old = old or {}
      old[#old + 1] = fields[i]
    end
  end
  if old then rcall('HDEL', pkey, unpack(old)) end

  rcall('ZREM', base .. ':active', vid)
  local KW = opts.kill_rate_window_ms
  local killedkey = base .. ':killed'
  rcall('ZADD', killedkey, istr(posted_at), vid)
  rcall('ZREMRANGEBYSCORE', killedkey, '-inf', istr(ctx.ts - KW))
  rcall('PEXPIRE', killedkey, istr(KW))
  local killskey = base .. ':kills'
  rcall('ZADD', killskey, istr(ctx.ts), vid)
  rcall('ZREMRANGEBYRANK', killskey, '0', istr(-(RECENT_KILLS_KEPT + 1)))
  rcall('EXPIRE', killskey, istr(opts.killed_ttl_s))

  publish(ctx, msgs)
  return ids[1]
end

local HANDLERS = {
  variant_posted = on_variant_posted,
  performance_update = on_performance_update,
  early_kill = on_early_kill,
}

---------------------------------------------------------------------------
-- entry points
---------------------------------------------------------------------------
local function ingest(keys, args)
  if not floor then init() end
  local rec = check_base(keys)
  local nargs = #args
  if nargs < 1 then bad('event', 'missing event JSON argument') end
  if nargs > 2 then bad('args', 'expected <event-json> [<options-json>], got ' .. nargs .. ' arguments') end
  local raw = args[1]
  local ev = decode_json(raw, 'event')
  if typ(ev) ~= 'table' or ev[1] ~= nil then bad('event', 'must be a JSON object') end
  local opts = parse_options(args[2])
  check_persona_len(rec, opts)
  local t = ev.type
  local handler = HANDLERS[t]
  if not handler then
    if not is_object(ev, raw) then bad('event', 'must be a JSON object') end
    if not present(t) then bad('type', 'missing') end
    if typ(t) ~= 'string' then bad('type', 'must be a string, got ' .. shown(t)) end
    bad('type', 'unknown event type ' .. q(t) .. ' (expected variant_posted, performance_update or early_kill)')
  end
  local vid = ev.variant_id
  if typ(vid) ~= 'string' or #vid > MAX_ID_LEN or not smatch(vid, ID_PATTERN) then
    req_id(ev, 'variant_id')
  end
  local ts = ev.ts
  if ts ~= nil and (typ(ts) ~= 'number' or not (ts >= 0 and ts <= MAX_INT) or floor(ts) ~= ts) then
    ts = opt_ms(ev, 'ts')                    -- null -> nil, anything else raises
  end
  local tm = rcall('TIME')
  local now = tonum(tm[1]) * 1000 + floor(tonum(tm[2]) / 1000)
  return handler({rec = rec, base = rec.base, opts = opts, now = now, ts = ts or now}, ev, vid)
end

-- decoded view of a variant hash (map of its fields) for the minute nm:
-- the fields listed in README "pulse_snapshot"; nil if there is no variant
local function variant_view(vid, h, nm)
  if not h.status then return nil end
  local vc, ic, _, lu = parse_st(h.st)
  local bv, bi = {}, {}
  for k = 0, RING - 1 do
    local m, v, i = parse_slot(h[SLOT[k]])
    if m then bv[m], bi[m] = v, i end
  end
  local v5, i5, v15, i15, v60, i60 = window_sums(bv, bi, nm)
  local series = {}
  for k = 1, RING do
    local mm = nm - RING + k
    local v = bv[mm]
    series[k] = (v and v > 0) and r6(bi[mm] / v) or jnull
  end
  local pred = tonum(h.predicted_er) or 0
  local cer = vc > 0 and ic / vc or 0
  return {
    variant_id = vid, content = h.content or '', predicted_er = pred,
    pattern_used = (h.pattern_used and h.pattern_used ~= '') and h.pattern_used or jnull,
    posted_at = tonum(h.posted_at) or jnull, status = h.status,
    view_count = vc, interaction_count = ic, current_er = r6(cer),
    performance_vs_prediction = (pred > 0 and vc > 0) and r6((cer - pred) / pred) or jnull,
    last_updated = lu,
    er_5m = ratio(i5, v5), er_15m = ratio(i15, v15), er_60m = ratio(i60, v60),
    er_series = series, er_series_start = (nm - RING + 1) * MINUTE_MS,
  }, bv, bi
end

local function snapshot(keys, args)
  if not floor then init() end
  local rec = check_base(keys)
  local base = rec.base
  if #args > 1 then bad('args', 'expected [<options-json>], got ' .. #args .. ' arguments') end
  local opts = parse_options(args[1])
  check_persona_len(rec, opts)
  local now = opts.now_ms or now_ms()
  local nm = floor(now / MINUTE_MS)
  local per = hash_map(rcall('HGETALL', base .. ':persona'))
  local offset = jnull
  local lms, lseq = stream_last_id(base .. ':stream')
  if lms then offset = fmt('%d-%d', lms, lseq) end

  local active_n = tonum(per.active_variants) or 0
  local er_sum_u = tonum(per.er_sum_u) or 0
  local today = day_str(now)
  local kills_today = tonum(per['kills:' .. today]) or 0
  local kill_ms = tonum(per['kill_ms_sum:' .. today]) or 0
  local KW = opts.kill_rate_window_ms
  local hi = istr(now)
  local lo_k = '(' .. istr(now - KW)
  local posted_w = rcall('ZCOUNT', base .. ':posted', lo_k, hi)
  local killed_w = rcall('ZCOUNT', base .. ':killed', lo_k, hi)

  local summary = jencode({
    total_variants = tonum(per.total_variants) or 0,
    active_variants = active_n,
    avg_engagement_rate = active_n > 0 and r6(er_sum_u / active_n / 1e6) or jnull,
    kills_today = kills_today,
    avg_time_to_kill_minutes = kills_today > 0 and r2(kill_ms / kills_today / MINUTE_MS) or jnull,
    kill_rate = posted_w > 0 and r6(killed_w / posted_w) or jnull,
    posted_in_window = posted_w,
    killed_in_window = killed_w,
    kill_rate_window_ms = KW,
  })

  -- active variants, most recently posted first
  local maxv = opts.max_variants
  local vids = {}
  if maxv > 0 then vids = rcall('ZREVRANGE', base .. ':active', '0', istr(maxv - 1)) end
  local active_json = {}
  for _, vid in ipairs(vids) do
    local t = variant_view(vid, hash_map(rcall('HGETALL', base .. ':v:' .. vid)), nm)
    if t then active_json[#active_json + 1] = jencode(t) end
  end
  local truncated = rcall('ZCARD', base .. ':active') > #vids

  -- patterns used in (now - W, now], most used first
  local W = opts.pattern_window_ms
  local thr = opts.pattern_fatigue_threshold
  local lo_p = '(' .. istr(now - W)
  local names = rcall('ZRANGEBYSCORE', base .. ':patterns', lo_p, '+inf')
  local pats = {}
  for _, p in ipairs(names) do
    local c = rcall('ZCOUNT', base .. ':pat:' .. p, lo_p, hi)
    if c > 0 then pats[#pats + 1] = {p, c} end
  end
  table.sort(pats, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] < b[1]
  end)
  local pat_json = {}
  for i, pc in ipairs(pats) do
    pat_json[i] = jencode({pattern = pc[1], usage_count = pc[2], fatigued = pc[2] > thr})
  end

  -- recent kills, newest first
  local kill_json = {}
  if opts.recent_kills > 0 then
    local ks = rcall('ZREVRANGE', base .. ':kills', '0', istr(opts.recent_kills - 1), 'WITHSCORES')
    for i = 1, #ks, 2 do
      local vid = ks[i]
      local k = rcall('HMGET', base .. ':v:' .. vid, 'kill_reason', 'final_er', 'sample_size',
                      'time_to_kill_ms', 'posted_at', 'pattern_used')
      local ttk = tonum(k[4])
      kill_json[#kill_json + 1] = jencode({
        variant_id = vid, killed_at = tonum(ks[i + 1]),
        kill_reason = k[1] or jnull, final_er = tonum(k[2]) or jnull,
        sample_size = tonum(k[3]) or jnull,
        time_to_kill_minutes = ttk and r2(ttk / MINUTE_MS) or jnull,
        posted_at = tonum(k[5]) or jnull,
        pattern_used = (k[6] and k[6] ~= '') and k[6] or jnull,
      })
    end
  end

  return '{"offset":' .. jencode(offset) ..
         ',"now":' .. istr(now) ..
         ',"summary":' .. summary ..
         ',"active_variants":' .. json_array(active_json) ..
         ',"active_variants_truncated":' .. (truncated and 'true' or 'false') ..
         ',"patterns":' .. json_array(pat_json) ..
         ',"recent_kills":' .. json_array(kill_json) .. '}'
end

-- one variant: the snapshot fields plus posted_id, kill fields and buckets
local function variant(keys, args)
  if not floor then init() end
  local rec = check_base(keys)
  if #args < 1 or #args > 2 then
    bad('args', 'expected <variant_id> [<options-json>], got ' .. #args .. ' arguments')
  end
  local vid = req_id({variant_id = args[1]}, 'variant_id')
  local opts = parse_options(args[2])
  check_persona_len(rec, opts)
  local now = opts.now_ms or now_ms()
  local h = hash_map(rcall('HGETALL', rec.vpre .. vid))
  local t, bv, bi = variant_view(vid, h, floor(now / MINUTE_MS))
  if not t then return false end
  t.posted_id = h.posted_id or jnull
  t.kill_reason = h.kill_reason or jnull
  t.final_er = tonum(h.final_er) or jnull
  t.sample_size = tonum(h.sample_size) or jnull
  t.killed_at = tonum(h.killed_at) or jnull
  t.kill_id = h.kill_id or jnull
  local ttk = tonum(h.time_to_kill_ms)
  t.time_to_kill_minutes = ttk and r2(ttk / MINUTE_MS) or jnull
  t.ttl_ms = rcall('PTTL', rec.vpre .. vid)
  local minutes = {}
  for m in pairs(bv) do minutes[#minutes + 1] = m end
  table.sort(minutes)
  local buckets = {}
  for i, m in ipairs(minutes) do
    buckets[i] = fmt('{"minute":%d,"view_delta":%d,"interaction_delta":%d}', m, bv[m], bi[m])
  end
  local j = jencode(t)
  return string.sub(j, 1, -2) .. ',"buckets":' .. json_array(buckets) .. '}'
end

local function version()
  return VERSION
end

---------------------------------------------------------------------------
-- pulse_publish: a message on a channel of a [[channels]] namespace
---------------------------------------------------------------------------
-- Per channel base record (a cache, like `bases`): key names, the
-- namespace's history and the last stream id generated.
local chans, chans_count = {}, 0

local function check_channel(keys)
  if #keys ~= 1 then bad('keys', 'expected exactly 1 key <prefix>:{<namespace>:<id>}, got ' .. #keys) end
  local base = keys[1]
  local rec = chans[base]
  if rec then return rec end
  local problem = text_problem(base)
  if problem then bad('key', problem) end
  local prefix, ns, id = smatch(base, '^(.+):{([^{}:]*):([^{}]*)}$')
  if not prefix or sfind(prefix, '[{}]') then
    bad('key', 'must look like <prefix>:{<namespace>:<id>}, got ' .. q(base))
  end
  local history = DEFAULTS.channels[ns]
  if not history then
    bad('namespace', 'unknown namespace ' .. q(ns) .. ' (not in the gateway\'s [[channels]])')
  end
  local max_len = DEFAULTS.max_persona_id_len
  if #id < 1 or #id > max_len or not smatch(id, PERSONA_PATTERN) then
    bad('id', 'must be 1..' .. max_len .. ' chars of [A-Za-z0-9_.-], got ' .. q(id))
  end
  chans_count = chans_count + 1
  if chans_count > 100000 then chans, chans_count = {}, 1 end
  -- The audit's backlog bound, scaled to short histories: a margin of a
  -- tenth of the history when backlog_margin would not leave room.
  local margin = DEFAULTS.backlog_margin
  if margin > floor(history / 10) then margin = floor(history / 10) end
  rec = {skey = base .. ':stream', ch = base .. ':events', history = history, maxlen_s = fmt('%d', history),
         opts = {stream_maxlen = history, backlog_margin = margin}}
  chans[base] = rec
  return rec
end

-- The one place a channel message is published: PUBLISH, or SPUBLISH in
-- a Cluster (PUBLISH_CMD), as for personas.
local function channel_publish(ch, msg)
  rcall(PUBLISH_CMD, ch, msg)
end

-- The stored and published message: the caller's object with "offset" first.
local function with_offset(raw, id)
  local rest = smatch(raw, '^%s*{%s*(.*)$')
  if string.sub(rest, 1, 1) == '}' then return '{"offset":"' .. id .. '"' .. rest end
  return '{"offset":"' .. id .. '",' .. rest
end

local function publish_message(keys, args)
  if not floor then init() end
  local rec = check_channel(keys)
  if #args ~= 1 then bad('args', 'expected <message-json>, got ' .. #args .. ' arguments') end
  local raw = args[1]
  local limit = DEFAULTS.max_publish_bytes
  if #raw > limit then bad('message', 'larger than ' .. limit .. ' bytes') end
  local m = decode_json(raw, 'message')
  if not is_object(m, raw) then bad('message', 'must be a JSON object') end
  if rec.history == 0 then
    channel_publish(rec.ch, raw)
    return false
  end
  if m.offset ~= nil then bad('offset', 'is set by pulse_publish (the stream id); leave it out') end
  local t = m.type
  if typ(t) ~= 'string' or #t > MAX_ID_LEN then t = 'message' end
  check_backlog(rec, rec.skey, 1)
  local tm = rcall('TIME')
  local now = tonum(tm[1]) * 1000 + floor(tonum(tm[2]) / 1000)
  local ms, seq = id_after(rec.ms, rec.seq, now)
  for attempt = 1, 2 do
    local id = fmt('%d-%d', ms, seq)
    local msg = with_offset(raw, id)
    if #msg > limit then bad('message', 'larger than ' .. limit .. ' bytes with its offset') end
    local r = (attempt == 1 and rpcall or rcall)('XADD', rec.skey, 'MAXLEN', '~', rec.maxlen_s, id,
                                                 'm', msg, 't', t)
    if typ(r) ~= 'table' or not r.err then
      rec.ms, rec.seq = ms, seq
      channel_publish(rec.ch, msg)
      return id
    end
    -- id refused (cache cold or behind the stream): resync and retry once
    local lms, lseq = stream_last_id(rec.skey)
    ms, seq = id_after(lms, lseq, now)
  end
end

redis.register_function('pulse_ingest', protect(ingest))
redis.register_function{function_name = 'pulse_snapshot', callback = protect(snapshot), flags = {'no-writes'}}
redis.register_function{function_name = 'pulse_variant', callback = protect(variant), flags = {'no-writes'}}
redis.register_function('pulse_publish', protect(publish_message))
redis.register_function{function_name = 'pulse_version', callback = version, flags = {'no-writes'}}
