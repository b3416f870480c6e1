"""How fast the s3 exporter turns batches into object bodies: spans per second and CPU-µs per span for each
marshaler, with content stripped (include_content: false) and gzip as the exporter does it. No network.

    python bench/s3_marshal.py [--spans 20000] [--batch 500]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.pdata import Batch, Signal, new_keyvalue
from exporters.s3 import gzip_compress, marshal


def realistic_batch(n: int, seed: int) -> Batch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(new_keyvalue("service.name", "gateway"))
    ss = rs.scope_spans.add()
    prompt = ("Summarise the customer's last three orders and suggest a follow-up. " * 12)[:900]
    for i in range(n):
        s = ss.spans.add()
        s.trace_id = hashlib.md5(f"{seed}-{i}".encode()).digest()
        s.span_id = s.trace_id[:8]
        s.name = "litellm_request"
        s.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        s.end_time_unix_nano = s.start_time_unix_nano + 842_000_000
        for k, v in (("gen_ai.system", "openai"), ("gen_ai.request.model", "gpt-4o"),
                     ("gen_ai.usage.input_tokens", 1200), ("gen_ai.usage.output_tokens", 320),
                     ("gen_ai.usage.cost", 0.0062), ("tenant.id", f"t{i % 50}"), ("feature", "support"),
                     ("metadata.user_api_key_user_id", f"u{i}"), ("http.response.status_code", 200),
                     ("gen_ai.input.messages", f'[{{"role":"user","content":"{prompt}"}}]'),
                     ("gen_ai.output.messages", f'[{{"role":"assistant","content":"{prompt[:400]}"}}]')):
            s.attributes.append(new_keyvalue(k, v))
    return Batch(Signal.TRACES, req, raw=req.SerializeToString())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    a = ap.parse_args()
    nb = max(1, a.spans // a.batch)
    print(f"{nb} batches x {a.batch} spans (~1.3 KB of content per span), include_content false, gzip (ISA-L level 3)")
    for marshaler in ("otlp_proto", "otlp_json", "ndjson"):
        batches = [Batch.from_bytes(Signal.TRACES, realistic_batch(a.batch, j).to_bytes()) for j in range(nb)]
        t0, c0 = time.perf_counter(), time.process_time()
        size = 0
        for k in range(0, nb, 20):  # 20 requests per object, as grouped by the queue
            body = marshal(Signal.TRACES, batches[k:k + 20], marshaler, include_content=False)
            size += len(gzip_compress(body))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = nb * a.batch
        print(f"{marshaler:<10} {n / cpu:>10,.0f} spans/CPU-s  {cpu / n * 1e6:6.1f} CPU-us/span  "
              f"{size / n:6.0f} gzip bytes/span  (wall {wall:.2f}s)")


if __name__ == "__main__":
    main()
