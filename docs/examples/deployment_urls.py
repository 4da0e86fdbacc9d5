"""The Redis URLs of docs/redis.md and docs/deployment.md (constructing a hub
does not connect; ``async with hub`` does)."""

import redis.asyncio

import replayhub

# --8<-- [start:single]
hub = replayhub.Hub.from_url("redis://localhost:6379/0", namespace="myapp")
hub = replayhub.Hub.from_url("rediss://user:password@redis.example:6380/0")  # TLS, ACL user
hub = replayhub.Hub.from_url("unix:///run/redis/redis.sock?db=0")
hub = replayhub.Hub.from_url("redis://localhost:6379/0?driver=coredis")  # choose the client
# --8<-- [end:single]
# --8<-- [start:client]
client = redis.asyncio.Redis(host="localhost", port=6379)  # the one your app holds
hub = replayhub.Hub.from_client(client, namespace="myapp")
# --8<-- [end:client]
# --8<-- [start:cluster]
hub = replayhub.Hub.from_url(
    "redis+cluster://10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379", namespace="myapp"
)
# --8<-- [end:cluster]
# --8<-- [start:sentinel]
hub = replayhub.Hub.from_url(
    "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster",
    namespace="myapp",
)
# --8<-- [end:sentinel]
