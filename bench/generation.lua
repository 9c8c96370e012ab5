-- wrk: POST /v1/generations for accounts read from RF_KEYS ("<api key> <site id>" lines),
-- round-robin per thread. The body is a small meta title request.
local accounts = {}
local next_index = 1

function init(args)
  for line in io.lines(os.getenv("RF_KEYS")) do
    local key, site = line:match("^(%S+) (%S+)$")
    accounts[#accounts + 1] = { key = key, site = site }
  end
  next_index = math.random(#accounts)
end

function request()
  local account = accounts[next_index]
  next_index = next_index % #accounts + 1
  local body = '{"kind":"meta_title","site_id":"' .. account.site ..
    '","input":{"page_title":"Handmade oak furniture","page_content":' ..
    '"Solid oak tables and chairs, made by hand in Oslo since 1998."}}'
  return wrk.format("POST", "/v1/generations", {
    ["Authorization"] = "Bearer " .. account.key,
    ["Content-Type"] = "application/json",
  }, body)
end
