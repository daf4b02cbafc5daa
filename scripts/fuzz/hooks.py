# Hooks of the API fuzzing run (scripts/fuzz-api.sh).
import uuid

import schemathesis


@schemathesis.hook
def map_headers(context, headers):
    # A create made again with an Idempotency-Key answers the first call's record, even
    # if a later call deleted it: that is the header's promise (tests/api/idempotency.rs).
    # Left to themselves, the fuzzer's short keys repeat, and its stateful checks then
    # find "the record just created" gone. Each call gets a key of its own instead, so
    # that every check holds as for calls without one.
    if headers and "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = str(uuid.uuid4())
    return headers
