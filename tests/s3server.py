"""A real S3-compatible server for tests: moto's standalone server (``moto[server]``
from PyPI), run as its own process on a loopback port, so the downloader's boto3 client
talks HTTP to it exactly as it would to Amazon S3 or MinIO. Never a mocked client.

With ``auth=True`` the server checks signatures and IAM policies (moto's
``INITIAL_NO_AUTH_ACTION_COUNT``): the first requests create an administrator whose
keys sign everything after, so wrong keys are refused as Amazon refuses them. Without
it, any key is accepted, and :meth:`S3Server.restart` brings back an empty store (moto
keeps everything in memory) with its buckets created again: an outage, then the store
back.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
_ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
_NO_S3_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    def __init__(self, workdir: Path, auth: bool = False, buckets: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.auth = auth
        self.buckets = buckets
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key_id, self.secret = "testing-key-id", "testing-secret"
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self._client: S3Client | None = None  # the administrator's, kept: one pool

    # -- process -----------------------------------------------------------------

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("AWS_PROFILE", None)
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"  # the administrator's set-up
        self._starts += 1
        log = self.workdir / f"moto-{self.port}-{self._starts}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited {self._proc.returncode}: see {log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not listen within 60 s") from None
                time.sleep(0.1)
        if self.auth:
            self._create_admin()
        for bucket in self.buckets:
            self.client().create_bucket(Bucket=bucket)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(30)
        self._proc = None

    def restart(self) -> None:
        """Back on the same port, empty but for its buckets."""
        self.stop()
        self.start()

    # -- clients and users ----------------------------------------------------------

    def client(self, key_id: str | None = None, secret: str | None = None) -> S3Client:
        """The administrator's client (one, reused), or one signing with other keys."""
        if key_id is None and secret is None and self._client is not None:
            return self._client
        made = self._new_client(key_id, secret)
        if key_id is None and secret is None:
            self._client = made
        return made

    def _new_client(self, key_id: str | None, secret: str | None) -> S3Client:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key_id or self.key_id,
            aws_secret_access_key=secret or self.secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def _iam(self, key_id: str, secret: str) -> Any:
        import boto3

        return boto3.client(
            "iam",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def _create_admin(self) -> None:
        iam = self._iam("setup", "setup")  # unauthenticated: the first three requests
        iam.create_user(UserName="admin")
        iam.put_user_policy(
            UserName="admin", PolicyName="all", PolicyDocument=json.dumps(_ADMIN_POLICY)
        )
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def user_without_s3(self) -> tuple[str, str]:
        """Valid keys of a user denied every S3 action (auth servers only)."""
        return self.user_with_policy("no-s3", _NO_S3_POLICY)

    def user_allowed(self, name: str, actions: list[str]) -> tuple[str, str]:
        """Valid keys of a user allowed only ``actions`` (auth servers only)."""
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        return self.user_with_policy(name, policy)

    def user_with_policy(self, name: str, policy: dict[str, Any]) -> tuple[str, str]:
        iam = self._iam(self.key_id, self.secret)
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    # -- what tests look at ------------------------------------------------------------

    def properties(self, bucket: str, **more: str) -> dict[str, str]:
        """The downloader properties that deliver into ``bucket`` here."""
        return {
            "s3.bucket.name": bucket,
            "s3.endpoint.url": self.url,
            "aws.access.key.id": self.key_id,
            "aws.secret.access.key": self.secret,
            **more,
        }

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object's key and size."""
        found: dict[str, int] = {}
        pages = self.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["Size"]
        return found

    def body(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def metadata(self, bucket: str, key: str) -> dict[str, str]:
        return dict(self.client().head_object(Bucket=bucket, Key=key)["Metadata"])

    def unfinished_uploads(self, bucket: str) -> list[str]:
        """Keys with a multipart upload begun and neither completed nor aborted."""
        listed = self.client().list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in listed.get("Uploads", [])]
