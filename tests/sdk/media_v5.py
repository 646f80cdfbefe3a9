"""Media through the current `langfuse` SDK: `send` a generation with two images (a base64 data URI in
its input, a `LangfuseMedia` in its output), or `read TRACE_ID OBSERVATION_ID` it back: the stored
input/output, the same resolved by `LangfuseMedia.resolve_media_references`, and each media record
with its downloaded bytes. Prints one JSON line; `errors` lists what the SDK logged as warnings or errors
(its media upload never raises, it logs).

Images come base64-encoded in IMAGE_A and IMAGE_B.
"""

import base64
import json
import logging
import os
import re
import sys

import httpx
from langfuse import Langfuse
from langfuse.media import LangfuseMedia


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


collected = Collect()
logging.getLogger("langfuse").addHandler(collected)

lf = Langfuse(
    public_key=os.environ["PK"],
    secret_key=os.environ["SK"],
    base_url=os.environ["BASE_URL"],
    flush_at=50,
    flush_interval=0.5,
)


def send() -> dict:
    image_a = os.environ["IMAGE_A"]
    image_b = base64.b64decode(os.environ["IMAGE_B"])
    question = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_a}"}},
    ]
    with lf.start_as_current_observation(
        name="vision-call", as_type="generation", model="gpt-4o", input=[{"role": "user", "content": question}]
    ) as generation:
        thumbnail = LangfuseMedia(content_bytes=image_b, content_type="image/png")
        generation.update(output={"caption": "a small square", "thumbnail": thumbnail})
        ids = {"trace_id": generation.trace_id, "generation_id": generation.id}
    lf.flush()
    return ids


def read(trace_id: str, observation_id: str) -> dict:
    observations = lf.api.observations.get_many(trace_id=trace_id, fields="core,io", limit=50)
    observation = next(o for o in observations.data if o.id == observation_id)
    stored = {"input": observation.input, "output": observation.output}
    resolved = LangfuseMedia.resolve_media_references(obj=stored, langfuse_client=lf, resolve_with="base64_data_uri")
    media = {}
    for media_id in sorted(set(re.findall(r"\|id=([^|]+)\|", json.dumps(stored)))):
        record = lf.api.media.get(media_id)
        download = httpx.get(record.url, timeout=30)
        media[media_id] = {
            "content_type": record.content_type,
            "content_length": record.content_length,
            "uploaded_at": record.uploaded_at.isoformat(),
            "url": record.url,
            "url_expiry": record.url_expiry,
            "download_status": download.status_code,
            "download_content_type": download.headers.get("content-type"),
            "download_base64": base64.b64encode(download.content).decode(),
        }
    return {"stored": stored, "resolved": resolved, "media": media}


result = send() if sys.argv[1] == "send" else read(sys.argv[2], sys.argv[3])
lf.shutdown()
print(json.dumps({**result, "errors": collected.messages}))
