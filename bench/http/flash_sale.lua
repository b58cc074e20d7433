-- A flash sale against http_shop, for wrk: as many shoppers as connections,
-- each looping browse -> claim a coupon -> check out -> pay (or cancel),
-- then handing over to the next user of the same shopper. bench/http/run.py
-- creates the shop through the API first and passes its ids:
--
--   wrk -t T -c C -s flash_sale.lua URL -- HOT OTHERS POLICY C USERS PAY% T THINK
--
-- HOT is the hot product, OTHERS the other products ("2,3,4"), POLICY the
-- coupon policy, C the connections (= shoppers), USERS the users each
-- shopper goes through in turn (user ids 1 .. C x USERS, all with
-- deposits), PAY% the share of orders paid (the rest are cancelled), T
-- wrk's threads again (C must be a multiple of T), THINK the think time
-- in ms before each request (0: none, each connection sends flat out).
--
-- wrk does not tell response() which connection or request an answer
-- belongs to, so each request carries its shopper in X-Request-Id, which
-- http_shop echoes. A thread owns C / T shoppers; a shopper whose answer
-- came back waits in the thread's queue until a connection of the thread is
-- free to send its next step, so each connection always carries one
-- shopper's step, as C virtual users would. A browse picks the hot product
-- half the time, else one of the others, and the checkout buys what was
-- browsed. done() prints the answers by step and status as
-- "@@ step status count" lines, and wrk's own counts as "@@ ..." lines.

local threads = {}

function setup(thread)
  -- thread_no is a global of the thread's own Lua state
  thread:set("thread_no", #threads)
  table.insert(threads, thread)
end

local hot, others, policy, conns, users, pay_pct
local shoppers, ready, extra = {}, {}, 0
counts = {}

function init(args)
  hot = tonumber(args[1])
  others = {}
  for id in string.gmatch(args[2], "%d+") do table.insert(others, tonumber(id)) end
  policy = tonumber(args[3])
  conns = tonumber(args[4])
  users = tonumber(args[5])
  pay_pct = tonumber(args[6])
  local per_thread = math.floor(conns / tonumber(args[7]))
  local think = tonumber(args[8] or "0")
  if think > 0 then
    delay = function() return think end -- wrk waits this long per request
  end
  math.randomseed(thread_no * 7919 + 17)
  for k = 0, per_thread - 1 do
    local id = thread_no * per_thread + k
    shoppers[id] = {base = id, turn = 0, step = "browse"}
    table.insert(ready, id)
  end
end

local function user(s)
  return s.base + 1 + (s.turn % users) * conns
end

local function next_turn(s)
  s.turn = s.turn + 1
  s.coupon, s.order = nil, nil
  s.step = "browse"
end

local checked = false

function request()
  local id = table.remove(ready)
  if not checked then
    -- wrk calls request() once on the first thread before the run, to
    -- check the script: that shopper is not out, it stays ready.
    checked = true
    if thread_no == 0 then table.insert(ready, id) end
  end
  if id == nil then -- an answer was lost (a connection error): a new shopper
    extra = extra + 1
    id = (thread_no + 1) * 1000000 + extra
    shoppers[id] = {base = extra % conns, turn = 0, step = "browse"}
  end
  local s = shoppers[id]
  local h = {["X-Request-Id"] = tostring(id)}
  if s.step ~= "browse" and s.step ~= "pay" and s.step ~= "cancel" then
    h["Content-Type"] = "application/json"
  end
  if s.step == "browse" then
    if math.random() < 0.5 then s.product = hot else s.product = others[math.random(#others)] end
    return wrk.format("GET", "/products/" .. s.product, h)
  elseif s.step == "claim" then
    return wrk.format("POST", "/coupon-policies/" .. policy .. "/issue", h,
                      '{"user":' .. user(s) .. '}')
  elseif s.step == "checkout" then
    local c = ""
    if s.coupon then c = ',"coupon":' .. s.coupon end
    return wrk.format("POST", "/orders", h,
                      '{"user":' .. user(s) .. ',"lines":[{"product":' .. s.product ..
                      ',"qty":1}]' .. c .. '}')
  else -- pay or cancel
    return wrk.format("POST", "/orders/" .. s.order .. "/" .. s.step, h)
  end
end

function response(status, headers, body)
  local id = tonumber(headers["X-Request-Id"])
  local s = id and shoppers[id]
  if s == nil then
    counts["unmatched " .. status] = (counts["unmatched " .. status] or 0) + 1
    return
  end
  local key = s.step .. " " .. status
  counts[key] = (counts[key] or 0) + 1
  if s.step == "browse" then
    s.step = "claim"
  elseif s.step == "claim" then
    if status == 201 then s.coupon = tonumber(string.match(body, '"coupon":(%d+)')) end
    s.step = "checkout"
  elseif s.step == "checkout" then
    if status == 201 then
      s.order = tonumber(string.match(body, '"order":(%d+)'))
      if math.random(100) <= pay_pct then s.step = "pay" else s.step = "cancel" end
    else
      next_turn(s)
    end
  else
    next_turn(s)
  end
  table.insert(ready, id)
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("@@ %s %d\n", k, v)) end
  local e = summary.errors
  io.write(string.format("@@ errors connect=%d read=%d write=%d status=%d timeout=%d\n",
                         e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("@@ requests %d duration_us %d\n", summary.requests, summary.duration))
  io.write(string.format("@@ latency_ms p50=%.2f p95=%.2f p99=%.2f max=%.2f\n",
                         latency:percentile(50) / 1000, latency:percentile(95) / 1000,
                         latency:percentile(99) / 1000, latency.max / 1000))
end
