# How evenly persona channels spread over a Redis Cluster's primaries (docs/benchmarks.md):
# each persona id is its own hash tag, so its slot is CRC16(id) mod 16384.
# Usage: python3 scripts/cluster-spread.py
def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc
def slot(persona):
    return crc16(persona.encode()) % 16384   # hash tag {persona}
for n_primaries in (3, 6):
    bounds = [(i * 16384 // n_primaries, (i + 1) * 16384 // n_primaries - 1) for i in range(n_primaries)]
    for fmt in ("persona_{}", "{:08x}"):
        counts = [0] * n_primaries
        for i in range(10000):
            s = slot(fmt.format(i))
            counts[next(k for k, (a, b) in enumerate(bounds) if a <= s <= b)] += 1
        mean = 10000 / n_primaries
        print(n_primaries, fmt, counts, "max/mean = %.3f" % (max(counts) / mean))
