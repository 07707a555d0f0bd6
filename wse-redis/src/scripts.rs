//! The Lua scripts that change the cluster's shared state: each runs atomically in Redis, so
//! two nodes admitting one user's devices at once, or two nodes reaping one dead node, never
//! interleave. Time comes from Redis (`TIME`), the one clock every node shares.
//!
//! Keys of other nodes and users are built from the prefix inside a script (a single Redis,
//! or a primary with replicas; not Redis Cluster, whose slots would split them).

use std::sync::LazyLock;

use redis::Script;

/// Lua functions the scripts share. `forget_rooms(prefix, id)` ends a connection's own room
/// memberships; `forget_user(prefix, user)` takes a user who went offline out of the rooms it
/// joined as a whole. `seen(prefix, user)` is what others see of a user:
/// `{online, devices, alias, version}`; `touch(prefix, user)` gives the user's presence a new
/// version after its devices or profile changed and returns `{tell, user, online, devices,
/// alias, version}`, where `tell` says whether anyone sees the change (it was visible before
/// or is now); a user with no device left loses its profile.
const PRELUDE: &str = r"
local function forget_rooms(prefix, id)
  local joined = prefix .. ':joined:' .. id
  for _, room in ipairs(redis.call('SMEMBERS', joined)) do
    redis.call('HDEL', prefix .. ':room:' .. room, id)
  end
  redis.call('DEL', joined)
end
local function forget_user(prefix, user)
  local rooms = prefix .. ':user-rooms:' .. user
  for _, room in ipairs(redis.call('SMEMBERS', rooms)) do
    redis.call('SREM', prefix .. ':room-users:' .. room, user)
  end
  redis.call('DEL', rooms)
end
-- Appends `items` to `result` as a section: their count, then each.
local function section(result, items)
  result[#result + 1] = tostring(#items)
  for _, item in ipairs(items) do
    result[#result + 1] = item
  end
end
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
-- A user whose last device left: offline now (returns 1), or after its grace period.
local function last_device_left(prefix, user, grace_ms)
  if grace_ms > 0 then
    redis.call('ZADD', prefix .. ':grace', now_ms() + grace_ms, user)
    return 0
  end
  redis.call('SREM', prefix .. ':users', user)
  forget_user(prefix, user)
  return 1
end
local function seen(prefix, user)
  local devices = redis.call('ZCARD', prefix .. ':user:' .. user)
  local profile = redis.call('HMGET', prefix .. ':profile:' .. user, 'alias', 'available', 'version')
  local online = redis.call('SISMEMBER', prefix .. ':users', user) == 1
  local visible = online and profile[2] ~= '0'
  return {visible and '1' or '0', tostring(visible and devices or 0), profile[1] or user,
    tostring(profile[3] or 0)}
end
local function touch(prefix, user)
  local key = prefix .. ':profile:' .. user
  local shown = redis.call('HGET', key, 'shown') == '1'
  -- Never below Redis's clock in ms: versions keep growing when Redis restarts empty.
  local version = redis.call('INCR', prefix .. ':version')
  if version < now_ms() then
    version = now_ms()
    redis.call('SET', prefix .. ':version', version)
  end
  redis.call('HSET', key, 'version', version)
  local now = seen(prefix, user)
  if redis.call('SISMEMBER', prefix .. ':users', user) == 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'shown', now[1])
  end
  local tell = (shown or now[1] == '1') and '1' or '0'
  return {tell, user, now[1], now[2], now[3], now[4]}
end
";

/// A script that starts with [`PRELUDE`].
fn forgetting(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// Applies a profile update to an online user.
///
/// KEYS: the users set, the user's profile. ARGV: prefix, user, alias given ('1'|'0'), alias,
/// availability given ('1'|'0'), available ('1'|'0'). Returns `{}` when the user is not
/// online, else `{changed ('1'|'0'), then what touch returns, or the user's presence
/// unchanged with tell '0'}`.
pub(crate) static UPDATE_PROFILE: LazyLock<Script> = LazyLock::new(|| {
    forgetting(
        r"
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then
  return {}
end
local changed = false
if ARGV[3] == '1' and redis.call('HGET', KEYS[2], 'alias') ~= ARGV[4] then
  redis.call('HSET', KEYS[2], 'alias', ARGV[4])
  changed = true
end
if ARGV[5] == '1' then
  local available = redis.call('HGET', KEYS[2], 'available') ~= '0'
  if available ~= (ARGV[6] == '1') then
    redis.call('HSET', KEYS[2], 'available', ARGV[6])
    changed = true
  end
end
if changed then
  local result = {'1'}
  for _, item in ipairs(touch(ARGV[1], ARGV[2])) do
    result[#result + 1] = item
  end
  return result
end
local now = seen(ARGV[1], ARGV[2])
return {'0', '0', ARGV[2], now[1], now[2], now[3], now[4]}
",
    )
});

/// What others see of the online users (`who` empty: all of them), each as
/// `{user, online, devices, alias, version}`.
///
/// KEYS: the users set. ARGV: prefix, then the users asked about.
pub(crate) static SEEN: LazyLock<Script> = LazyLock::new(|| {
    forgetting(
        r"
local users = {}
if #ARGV > 1 then
  for i = 2, #ARGV do
    if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
      users[#users + 1] = ARGV[i]
    end
  end
else
  users = redis.call('SMEMBERS', KEYS[1])
end
local result = {}
for _, user in ipairs(users) do
  result[#result + 1] = user
  for _, item in ipairs(seen(ARGV[1], user)) do
    result[#result + 1] = item
  end
end
return result
",
    )
});

/// Lists a connection under its user within the limit.
///
/// KEYS: the user's set, the node's hash, the users set, the sequence. ARGV: connection id,
/// user id, limit, 1 to refuse the newest (else close the oldest), prefix.
/// A user who comes online starts with the profile its first device brought; the user's
/// presence takes a new version.
///
/// ARGV (after those above): alias ('' for none), available ('1'|'0'), public (JSON).
/// Returns `{'refused'}`, else `{joined ('0'|'1')}` and three sections, each its count then
/// its items (no item can be mistaken for a separator): the evicted ids (oldest first), the
/// rooms the user joined as a whole, and what touch returns.
pub(crate) static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    forgetting(
        r"
local count = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[3])
if ARGV[4] == '1' and count >= max then
  return {'refused'}
end
local order = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[1], order, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
-- A user within its grace period is still online: it comes back, it did not join.
redis.call('ZREM', ARGV[5] .. ':grace', ARGV[2])
local joined = redis.call('SADD', KEYS[3], ARGV[2])
if joined == 1 then
  local profile = ARGV[5] .. ':profile:' .. ARGV[2]
  redis.call('DEL', profile)
  redis.call('HSET', profile, 'available', ARGV[7], 'public', ARGV[8])
  if ARGV[6] ~= '' then
    redis.call('HSET', profile, 'alias', ARGV[6])
  end
end
local evicted = {}
local over = count + 1 - max
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, over - 1)) do
    redis.call('ZREM', KEYS[1], id)
    -- Out of its rooms here: its node may die before it releases it.
    forget_rooms(ARGV[5], id)
    local node = string.match(id, '@(%x+)$')
    if node then
      redis.call('HDEL', ARGV[5] .. ':node:' .. node, id)
    end
    evicted[#evicted + 1] = id
  end
end
local result = {tostring(joined)}
section(result, evicted)
section(result, redis.call('SMEMBERS', ARGV[5] .. ':user-rooms:' .. ARGV[2]))
section(result, touch(ARGV[5], ARGV[2]))
return result
",
    )
});

/// Takes a connection out of its user and its rooms; a user who goes offline leaves the rooms
/// it joined as a whole.
///
/// KEYS: the user's set, the node's hash, the users set. ARGV: connection id, user id,
/// prefix, grace period in ms. Returns `{listed ('0'|'1'), left ('0'|'1')}`, then what touch
/// returns when it was listed: `left` when the user went offline now (not when its grace
/// period began).
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    forgetting(
        r"
local listed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
forget_rooms(ARGV[3], ARGV[1])
local left = 0
if listed == 1 and redis.call('ZCARD', KEYS[1]) == 0 then
  left = last_device_left(ARGV[3], ARGV[2], tonumber(ARGV[4]))
end
local result = {tostring(listed), tostring(left)}
if listed == 1 then
  for _, item in ipairs(touch(ARGV[3], ARGV[2])) do
    result[#result + 1] = item
  end
end
return result
",
    )
});

/// Puts a connection in a room by its own join, unless it is closed or in `limit` rooms.
///
/// KEYS: the room's hash, the connection's rooms, its node's hash. ARGV: connection id,
/// room, limit (-1: none), prefix. Returns `now`, `already`, `limit` or `closed`.
pub(crate) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local user = redis.call('HGET', KEYS[3], ARGV[1])
if not user then
  return 'closed'
end
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then
  return 'already'
end
local limit = tonumber(ARGV[3])
local user_rooms = ARGV[4] .. ':user-rooms:' .. user
-- The limit counts rooms, whichever way the connection is in them; one it is in already
-- through its user takes no new place.
if limit >= 0 and redis.call('SISMEMBER', user_rooms, ARGV[2]) == 0
  and #redis.call('SUNION', KEYS[2], user_rooms) >= limit then
  return 'limit'
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], user)
return 'now'
",
    )
});

/// Ends a connection's own membership of a room. KEYS: the room's hash, the connection's
/// rooms. ARGV: connection id, room. Returns 1 when it was a member.
pub(crate) static LEAVE_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SREM', KEYS[2], ARGV[2]) == 1 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
",
    )
});

/// Ends every own membership of a connection. ARGV: prefix, connection id. Returns how many.
pub(crate) static LEAVE_ALL: LazyLock<Script> = LazyLock::new(|| {
    forgetting(
        r"
local count = redis.call('SCARD', ARGV[1] .. ':joined:' .. ARGV[2])
forget_rooms(ARGV[1], ARGV[2])
return count
",
    )
});

/// Puts an online user in a room as a whole. KEYS: the users set, the user's rooms, the
/// room's users. ARGV: user, room. Returns 1 when it joined now.
pub(crate) static JOIN_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then
  return 0
end
redis.call('SADD', KEYS[3], ARGV[1])
return 1
",
    )
});

/// Ends a user's membership of a room as a whole. KEYS: the user's rooms, the room's users.
/// ARGV: user, room. Returns 1 when it was in it.
pub(crate) static LEAVE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SREM', KEYS[1], ARGV[2]) == 0 then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
",
    )
});

/// The connections in a room, whichever way they joined. KEYS: the room's hash, the room's
/// users. ARGV: prefix.
pub(crate) static MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seen = {}
local members = {}
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  seen[id] = true
  members[#members + 1] = id
end
for _, user in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  for _, id in ipairs(redis.call('ZRANGE', ARGV[1] .. ':user:' .. user, 0, -1)) do
    if not seen[id] then
      seen[id] = true
      members[#members + 1] = id
    end
  end
end
return members
",
    )
});

/// Lists connections again that Redis lost (it restarted empty, or this node was taken for
/// dead): the same as an admission without the limit, for each one not listed.
///
/// KEYS: the node's hash, the users set, the sequence. ARGV: prefix, then pairs of
/// connection id and user id. Returns `{how many were listed again}` and a section of what
/// touch returned for their users (their profiles are not restored: they start from the
/// defaults).
pub(crate) static RELIST: LazyLock<Script> = LazyLock::new(|| {
    forgetting(
        r"
local relisted = 0
local touched = {}
for i = 2, #ARGV, 2 do
  local id, user = ARGV[i], ARGV[i + 1]
  local key = ARGV[1] .. ':user:' .. user
  if not redis.call('ZSCORE', key, id) then
    redis.call('ZADD', key, redis.call('INCR', KEYS[3]), id)
    redis.call('SADD', KEYS[2], user)
    touched[user] = true
    relisted = relisted + 1
  end
  redis.call('HSET', KEYS[1], id, user)
end
local changes = {}
for user, _ in pairs(touched) do
  for _, item in ipairs(touch(ARGV[1], user)) do
    changes[#changes + 1] = item
  end
end
local result = {tostring(relisted)}
section(result, changes)
return result
",
    )
});

/// Renews this node and takes out every node past its deadline, with its connections.
///
/// Also takes offline the users whose grace period ran out with no device back.
///
/// KEYS: the nodes set. ARGV: this node, its timeout in ms, prefix, grace period in ms.
/// Returns `{known ('0'|'1'), the number of dead nodes, then for each its id and a section
/// (count, items) of the users who went offline with it; then a section of what touch
/// returned for each user who lost a device or went offline, and one of the users whose
/// grace period ran out}`:
/// `known` is 0 when Redis did not know this node (it lost its data, or took this node for
/// dead).
pub(crate) static BEAT: LazyLock<Script> = LazyLock::new(|| {
    forgetting(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local known = 1
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  known = 0
end
local gone = {}
local touched = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  if node ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], node)
    local hash = ARGV[3] .. ':node:' .. node
    local listed = redis.call('HGETALL', hash)
    local offline = {}
    for i = 1, #listed, 2 do
      local key = ARGV[3] .. ':user:' .. listed[i + 1]
      forget_rooms(ARGV[3], listed[i])
      if redis.call('ZREM', key, listed[i]) == 1 then
        touched[listed[i + 1]] = true
        if redis.call('ZCARD', key) == 0
          and last_device_left(ARGV[3], listed[i + 1], tonumber(ARGV[4])) == 1 then
          offline[#offline + 1] = listed[i + 1]
        end
      end
    end
    redis.call('DEL', hash)
    gone[#gone + 1] = {node, offline}
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
-- Users whose grace period ran out without a device coming back: offline now, claimed here.
local swept = {}
local grace = ARGV[3] .. ':grace'
for _, user in ipairs(redis.call('ZRANGEBYSCORE', grace, '-inf', now)) do
  redis.call('ZREM', grace, user)
  if redis.call('ZCARD', ARGV[3] .. ':user:' .. user) == 0 then
    redis.call('SREM', ARGV[3] .. ':users', user)
    forget_user(ARGV[3], user)
    touched[user] = true
    swept[#swept + 1] = user
  end
end
local result = {tostring(known), tostring(#gone)}
for _, node in ipairs(gone) do
  result[#result + 1] = node[1]
  section(result, node[2])
end
local changes = {}
for user, _ in pairs(touched) do
  for _, item in ipairs(touch(ARGV[3], user)) do
    changes[#changes + 1] = item
  end
end
section(result, changes)
section(result, swept)
return result
",
    )
});

/// Says goodbye: takes this node and its connections out at once, as a dead node would be.
///
/// KEYS: the nodes set, the node's hash. ARGV: this node, prefix, grace period in ms.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    forgetting(
        r"
redis.call('ZREM', KEYS[1], ARGV[1])
local listed = redis.call('HGETALL', KEYS[2])
for i = 1, #listed, 2 do
  local key = ARGV[2] .. ':user:' .. listed[i + 1]
  forget_rooms(ARGV[2], listed[i])
  if redis.call('ZREM', key, listed[i]) == 1 and redis.call('ZCARD', key) == 0 then
    last_device_left(ARGV[2], listed[i + 1], tonumber(ARGV[3]))
  end
end
redis.call('DEL', KEYS[2])
return 1
",
    )
});

/// A script's reply read in order: single items, and sections (a count, then that many
/// items), so that no item, whatever text a user chose, is taken for a separator.
pub(crate) struct Reply<'a> {
    rest: &'a [String],
}

impl<'a> Reply<'a> {
    pub(crate) fn new(items: &'a [String]) -> Self {
        Self { rest: items }
    }

    /// The next item.
    pub(crate) fn item(&mut self) -> Option<&'a str> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    /// The next section's items.
    pub(crate) fn section(&mut self) -> Option<&'a [String]> {
        let count: usize = self.item()?.parse().ok()?;
        if count > self.rest.len() {
            return None;
        }
        let (items, rest) = self.rest.split_at(count);
        self.rest = rest;
        Some(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn sections_hold_any_text_and_a_short_reply_is_none() {
        let items = strings(&["1", "2", "|", "0", "0", "1", "|"]);
        let mut reply = Reply::new(&items);
        assert_eq!(reply.item(), Some("1"));
        assert_eq!(reply.section(), Some(&items[2..4]));
        assert_eq!(reply.section(), Some(&[][..]));
        assert_eq!(reply.section(), Some(&items[6..7]));
        assert_eq!(reply.item(), None);
        assert_eq!(reply.section(), None);
        let lying = strings(&["5", "a"]);
        assert_eq!(Reply::new(&lying).section(), None);
    }
}
