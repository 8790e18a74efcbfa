"""The peer: Microsoft's azure-monitor-ingestion SDK uploading the same rows to the same
counting endpoint. Prints one JSON line: rows, seconds, cpu_seconds.

Usage: peer_upload.py ENDPOINT DCR_ID STREAM ROWS_NDJSON
"""
import json
import sys
import time

from azure.core.credentials import AccessToken
from azure.monitor.ingestion import LogsIngestionClient


class FixedToken:
    """The counting endpoint does not check tokens; this stands in for a credential."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken("bench", int(time.time()) + 3600)


def main():
    endpoint, dcr, stream, path = sys.argv[1:5]
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    client = LogsIngestionClient(endpoint=endpoint, credential=FixedToken(), logging_enable=False)
    start = time.perf_counter()
    cpu_start = time.process_time()
    # enforce_https=False: the counting endpoint is plain HTTP on loopback.
    client.upload(rule_id=dcr, stream_name=stream, logs=rows, enforce_https=False)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    print(json.dumps({"rows": len(rows), "seconds": seconds, "cpu_seconds": cpu}))


if __name__ == "__main__":
    main()
