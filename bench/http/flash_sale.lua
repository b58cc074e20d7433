-- A flash sale against http_shop, for wrk: every connection is a shopper who
-- loops browse -> claim a coupon -> check out -> pay (or cancel), then the
-- next shopper of the same connection takes over. bench/http/run.py creates
-- the shop through the API first and passes its ids:
--
--   wrk -t C -c C -s flash_sale.lua URL -- HOT OTHERS POLICY C USERS PAY%
--
-- HOT is the hot product, OTHERS the other products ("2,3,4"), POLICY the
-- coupon policy, C the connections, USERS the shoppers per connection (user
-- ids 1 .. C x USERS, all with deposits), PAY% the share of orders paid (the
-- rest are cancelled). Each wrk thread runs one connection (-t C -c C): wrk
-- does not say which connection a response belongs to, so a thread's Lua
-- state is one connection's shopper state. A browse picks the hot product
-- half the time, else one of the others, and the checkout buys what was
-- browsed. Answers are counted by step and status; done() prints them as
-- "@@ step status count" lines, and wrk's own error counts as "@@ errors".

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("conn", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local hot, others, policy, conns, users, pay_pct
local step, shopper, product, coupon, order
counts = {}

function init(args)
  hot = tonumber(args[1])
  others = {}
  for id in string.gmatch(args[2], "%d+") do table.insert(others, tonumber(id)) end
  policy = tonumber(args[3])
  conns = tonumber(args[4])
  users = tonumber(args[5])
  pay_pct = tonumber(args[6])
  math.randomseed(conn * 7919 + 17)
  shopper = 0
  step = "browse"
end

local json = {["Content-Type"] = "application/json"}

local function user()
  return conn + 1 + (shopper % users) * conns
end

function request()
  if step == "browse" then
    if math.random() < 0.5 then product = hot else product = others[math.random(#others)] end
    return wrk.format("GET", "/products/" .. product)
  elseif step == "claim" then
    return wrk.format("POST", "/coupon-policies/" .. policy .. "/issue", json,
                      '{"user":' .. user() .. '}')
  elseif step == "checkout" then
    local c = ""
    if coupon then c = ',"coupon":' .. coupon end
    return wrk.format("POST", "/orders", json,
                      '{"user":' .. user() .. ',"lines":[{"product":' .. product ..
                      ',"qty":1}]' .. c .. '}')
  else -- pay or cancel
    return wrk.format("POST", "/orders/" .. order .. "/" .. step)
  end
end

local function next_shopper()
  shopper = shopper + 1
  coupon, order = nil, nil
  step = "browse"
end

function response(status, headers, body)
  local key = step .. " " .. status
  counts[key] = (counts[key] or 0) + 1
  if step == "browse" then
    step = "claim"
  elseif step == "claim" then
    if status == 201 then coupon = tonumber(string.match(body, '"coupon":(%d+)')) end
    step = "checkout"
  elseif step == "checkout" then
    if status == 201 then
      order = tonumber(string.match(body, '"order":(%d+)'))
      if math.random(100) <= pay_pct then step = "pay" else step = "cancel" end
    else
      next_shopper()
    end
  else
    next_shopper()
  end
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
