import logging
import os
import urllib.request

import pytest

# Offline and quiet everywhere: no hub look-ups, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def s3_bucket():
    """``storage_options`` of an empty bucket ``depth`` on a real S3 API: moto's server on loopback."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="depth")
        yield {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    finally:
        server.stop()


@pytest.fixture
def s3_behind_proxy():
    """An empty bucket ``depth`` on moto's server, reached through a :class:`netfaults.TcpProxy`
    the test can stop and start (an endpoint outage). Yields ``(proxy, storage_options through
    the proxy, storage_options straight to the server)``: a test watches the bucket with the
    second while the first is down."""
    import boto3
    from moto.server import ThreadedMotoServer

    from netfaults import TcpProxy

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    proxy = TcpProxy(server.get_host_and_port()[1])
    proxy.start()
    try:
        direct = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        # moto's backends live in the process, not the server: forget earlier tests' buckets
        urllib.request.urlopen(urllib.request.Request(f"{direct}/moto-api/reset", method="POST")).close()
        boto3.client("s3", endpoint_url=direct, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="depth")
        creds = {"key": "testing", "secret": "testing"}
        yield proxy, {"endpoint_url": proxy.url, **creds}, {"endpoint_url": direct, **creds}
    finally:
        proxy.stop()
        server.stop()
