"""SVID fetches in a closed loop with the official SPIFFE client for Python, over one
channel: `x509 N` or `jwt N`. Prints key=value results."""
import sys
import time

from spiffe import WorkloadApiClient

kind, n = sys.argv[1], int(sys.argv[2])
with WorkloadApiClient() as client:
    client.fetch_x509_svid()
    fetch = (
        client.fetch_x509_svid
        if kind == "x509"
        else lambda: client.fetch_jwt_svid(audience={"bench"})
    )
    start = time.perf_counter()
    for _ in range(n):
        fetch()
    took = time.perf_counter() - start
print(f"fetches={n} seconds={took:.6f} per_second={n / took:.1f} us_per_fetch={took / n * 1e6:.1f}")
