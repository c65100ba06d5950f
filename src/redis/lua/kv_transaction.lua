-- KeyValue.Transaction: guards, then operations, all or nothing.
--
-- Redis does not roll back a script that fails half-way, so nothing is written until every
-- operation has been checked against a shadow of the keys it touches (types, integer values,
-- 64-bit overflow, computed exactly on decimal strings). Only then are the operations applied.
--
-- KEYS: the distinct keys. ARGV, read in order:
--   guard count, then per guard: kind, key index, field, value (lock_held: the lock's key, '',
--   the owner token)
--   op count, then per op: kind, key index, and
--     set: value, ttl ms or ''   | delete: -         | expire: ttl ms | incrby: delta
--     hset: n, field, value, ... | hdel: n, field... | hincrby: field, delta
-- Returns {0, failed guard index (from 0)} or {1, {result strings, one per op}}.
-- Errors: 'GWARG <field> <reason>' (bad input), 'GWSTATE <field> <reason>' (a stored value
-- that does not allow the operation) and 'GWTYPE <reason>' (type clash).

local pos = 1
local function take()
  local value = ARGV[pos]
  pos = pos + 1
  return value
end

-- Integers are handled as decimal strings, exactly: Lua numbers are doubles, exact only up to
-- 2^53, and would misjudge 64-bit overflow.
local INT64_MAX, INT64_MIN = '9223372036854775807', '-9223372036854775808'

-- Splits an integer string into its sign and its digits without leading zeros ('0' for zero).
local function canonical(text)
  local negative = string.sub(text, 1, 1) == '-'
  local digits = negative and string.sub(text, 2) or text
  digits = string.gsub(digits, '^0+', '')
  if digits == '' then
    return false, '0'
  end
  return negative, digits
end

-- Orders two digit strings without leading zeros: -1, 0 or 1.
local function compare_digits(a, b)
  if #a ~= #b then
    return (#a < #b) and -1 or 1
  elseif a == b then
    return 0
  end
  return (a < b) and -1 or 1
end

-- Orders two integer strings: -1, 0 or 1.
local function compare(a, b)
  local a_negative, a_digits = canonical(a)
  local b_negative, b_digits = canonical(b)
  if a_negative ~= b_negative then
    return a_negative and -1 or 1
  end
  local order = compare_digits(a_digits, b_digits)
  return a_negative and -order or order
end

-- Integer strings as Redis accepts them for INCRBY / HINCRBY: '0', or an optional '-' and
-- digits without a leading zero, within the signed 64-bit range.
local function is_int(text)
  if text == nil or #text > 20 then
    return false
  end
  if text ~= '0' and string.match(text, '^-?[1-9]%d*$') == nil then
    return false
  end
  return compare(text, INT64_MIN) >= 0 and compare(text, INT64_MAX) <= 0
end

-- The digit `offset` places from the right of a digit string (0 past its start).
local function digit(text, offset)
  local index = #text - offset
  if index < 1 then
    return 0
  end
  return string.byte(text, index) - 48
end

-- a + b for digit strings.
local function add_digits(a, b)
  local out, carry = {}, 0
  for offset = 0, math.max(#a, #b) - 1 do
    local sum = digit(a, offset) + digit(b, offset) + carry
    carry = (sum >= 10) and 1 or 0
    out[#out + 1] = sum - 10 * carry
  end
  if carry == 1 then
    out[#out + 1] = 1
  end
  return string.reverse(table.concat(out))
end

-- a - b for digit strings with a >= b.
local function subtract_digits(a, b)
  local out, borrow = {}, 0
  for offset = 0, #a - 1 do
    local difference = digit(a, offset) - digit(b, offset) - borrow
    borrow = (difference < 0) and 1 or 0
    out[#out + 1] = difference + 10 * borrow
  end
  local text = string.gsub(string.reverse(table.concat(out)), '^0+', '')
  return (text == '') and '0' or text
end

-- a + b for integer strings, exactly.
local function add(a, b)
  local a_negative, a_digits = canonical(a)
  local b_negative, b_digits = canonical(b)
  local negative, digits
  if a_negative == b_negative then
    negative, digits = a_negative, add_digits(a_digits, b_digits)
  elseif compare_digits(a_digits, b_digits) >= 0 then
    negative, digits = a_negative, subtract_digits(a_digits, b_digits)
  else
    negative, digits = b_negative, subtract_digits(b_digits, a_digits)
  end
  if negative and digits ~= '0' then
    return '-' .. digits
  end
  return digits
end

-- 1. Guards.
local guard_count = tonumber(take())
for i = 1, guard_count do
  local kind, key, field, value = take(), KEYS[tonumber(take())], take(), take()
  local holds
  if kind == 'exists' then
    holds = redis.call('EXISTS', key) == 1
  elseif kind == 'absent' then
    holds = redis.call('EXISTS', key) == 0
  elseif kind == 'value_equals' then
    holds = redis.call('TYPE', key)['ok'] == 'string' and redis.call('GET', key) == value
  elseif kind == 'hash_field_equals' then
    holds = redis.call('TYPE', key)['ok'] == 'hash' and redis.call('HGET', key, field) == value
  elseif kind == 'lock_held' then
    -- The lock key (lua/lock.lua's layout) names `value` as holder and its lease is running.
    local held = redis.call('HMGET', key, 'token', 'expires')
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    holds = held[1] == value and tonumber(held[2]) > now
  else
    -- hash_field_at_least / hash_field_at_most: a missing hash or field counts as 0.
    local key_type = redis.call('TYPE', key)['ok']
    local current
    if key_type == 'none' then
      current = '0'
    elseif key_type == 'hash' then
      current = redis.call('HGET', key, field) or '0'
    end
    if not is_int(current) then
      holds = false
    elseif kind == 'hash_field_at_least' then
      holds = compare(current, value) >= 0
    else
      holds = compare(current, value) <= 0
    end
  end
  if not holds then
    return {0, i - 1}
  end
end

-- 2. Check every operation against a shadow of the keys, writing nothing.
local shadows = {}
local function shadow(key)
  local entry = shadows[key]
  if entry == nil then
    local key_type = redis.call('TYPE', key)['ok']
    -- fresh: the shadow knows every field (the key is new or was replaced in this script).
    entry = { type = key_type, fields = {}, fresh = (key_type == 'none') }
    shadows[key] = entry
  end
  return entry
end

-- Whether a hash field exists, as the shadow sees it; asks Redis about fields it has not seen.
local function field_exists(entry, key, field)
  local known = entry.fields[field]
  if known ~= nil then
    return not known.gone
  end
  if entry.fresh then
    return false
  end
  return redis.call('HEXISTS', key, field) == 1
end

-- The shadow hash's field count (Redis deletes a hash when its last field goes).
local function hash_length(entry, key)
  if entry.length == nil then
    entry.length = entry.fresh and 0 or redis.call('HLEN', key)
  end
  return entry.length
end

-- current + delta for a string counter or hash field: the new value as a string, or nil and
-- the error to raise.
local function add_checked(current, delta, label)
  if not is_int(current) then
    return nil, 'GWSTATE ' .. label .. ' the stored value is not an integer'
  end
  local result = add(current, delta)
  if compare(result, INT64_MAX) > 0 or compare(result, INT64_MIN) < 0 then
    return nil, 'GWSTATE ' .. label .. '.delta the result would overflow a signed 64-bit integer'
  end
  return result
end

local op_count = tonumber(take())
local ops = {}
for i = 1, op_count do
  local kind, key = take(), KEYS[tonumber(take())]
  local op = { kind = kind, key = key }
  local label = 'ops[' .. (i - 1) .. '].' .. kind
  local entry = shadow(key)
  if kind == 'set' then
    op.value, op.ttl = take(), take()
    entry.type, entry.text, entry.fields, entry.fresh, entry.length = 'string', op.value, {}, true, nil
  elseif kind == 'delete' then
    entry.type, entry.text, entry.fields, entry.fresh, entry.length = 'none', nil, {}, true, nil
  elseif kind == 'expire' then
    op.ttl = take()
  elseif kind == 'incrby' then
    op.delta = take()
    if entry.type ~= 'none' and entry.type ~= 'string' then
      return redis.error_reply('GWTYPE ' .. label .. ': the key holds a ' .. entry.type .. ', not a string counter')
    end
    local current = '0'
    if entry.type == 'string' then
      if entry.text == nil then
        entry.text = redis.call('GET', key)
      end
      current = entry.text
    end
    local result, problem = add_checked(current, op.delta, label)
    if problem then
      return redis.error_reply(problem)
    end
    entry.type, entry.text = 'string', result
  else
    if entry.type ~= 'none' and entry.type ~= 'hash' then
      return redis.error_reply('GWTYPE ' .. label .. ': the key holds a ' .. entry.type .. ', not a hash')
    end
    op.args = {}
    hash_length(entry, key)
    if kind == 'hset' then
      for _ = 1, tonumber(take()) do
        local field, value = take(), take()
        op.args[#op.args + 1] = field
        op.args[#op.args + 1] = value
        if not field_exists(entry, key, field) then
          entry.length = entry.length + 1
        end
        entry.fields[field] = { text = value }
      end
      entry.type = 'hash'
    elseif kind == 'hdel' then
      for _ = 1, tonumber(take()) do
        local field = take()
        op.args[#op.args + 1] = field
        if field_exists(entry, key, field) then
          entry.length = entry.length - 1
        end
        entry.fields[field] = { gone = true }
      end
      if entry.length == 0 then
        entry.type, entry.fields, entry.fresh, entry.length = 'none', {}, true, nil
      end
    else
      op.field, op.delta = take(), take()
      local known = entry.fields[op.field]
      local current = '0'
      if known ~= nil then
        if not known.gone then
          current = known.text
        end
      elseif not entry.fresh then
        current = redis.call('HGET', key, op.field) or '0'
      end
      local result, problem = add_checked(current, op.delta, label)
      if problem then
        return redis.error_reply(problem)
      end
      if not field_exists(entry, key, op.field) then
        entry.length = entry.length + 1
      end
      entry.fields[op.field] = { text = result }
      entry.type = 'hash'
    end
  end
  ops[i] = op
end

-- 3. Apply. Results are strings: counters are read back so they stay exact past 2^53.
local results = {}
for i, op in ipairs(ops) do
  local result
  if op.kind == 'set' then
    if op.ttl ~= '' then
      redis.call('SET', op.key, op.value, 'PX', op.ttl)
    else
      redis.call('SET', op.key, op.value)
    end
    result = '1'
  elseif op.kind == 'delete' then
    result = tostring(redis.call('DEL', op.key))
  elseif op.kind == 'expire' then
    result = tostring(redis.call('PEXPIRE', op.key, op.ttl))
  elseif op.kind == 'incrby' then
    redis.call('INCRBY', op.key, op.delta)
    result = redis.call('GET', op.key)
  elseif op.kind == 'hset' then
    result = tostring(redis.call('HSET', op.key, unpack(op.args)))
  elseif op.kind == 'hdel' then
    result = tostring(redis.call('HDEL', op.key, unpack(op.args)))
  else
    redis.call('HINCRBY', op.key, op.field, op.delta)
    result = redis.call('HGET', op.key, op.field)
  end
  results[i] = result
end
return {1, results}
