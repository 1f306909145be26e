"""The public contract, once: paths, models, ratios, statuses, messages and the answers' keys (pure).

Everything here is what the seed page (and SPEC.md section 1) fixes, or mockgen's default where the
seed is silent (said so beside it). The routes, the backend, the OpenAPI document and the
conformance checker read it from here; tests/test_spec.py fails when one of them drifts from it.
This module imports nothing from mockgen, and nothing of HTTP.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

# --- auth: every request carries "Authorization: Bearer sk-<32 letters or digits>" ------------------

KEY_PATTERN: Final = r"sk-[A-Za-z0-9]{32}"
KEY_LENGTH: Final = 35

# --- paths ------------------------------------------------------------------------------------

TASKS_PREFIX: Final = "/api/v1/tasks/"
CREATE_PATH: Final = TASKS_PREFIX + "create"  # POST: submit a task
QUERY_PATH: Final = TASKS_PREFIX + "{task_id}"  # GET: poll it
# mockgen's own: the real service links its results to its CDN; mockgen serves them itself.
FILES_PREFIX: Final = "/files/"
FILES_PATH: Final = FILES_PREFIX + "{name}"  # {task_id}.png or {task_id}.mp4

# --- models and their kinds -------------------------------------------------------------------

Kind = Literal["image", "video"]
KINDS: tuple[Kind, ...] = ("image", "video")
RESULT_FIELD: Final[dict[str, str]] = {"image": "image_url", "video": "video_url"}  # where a result's URL goes
RESULT_EXT: Final[dict[str, str]] = {"image": "png", "video": "mp4"}  # a result file's extension, by kind


class Model(NamedTuple):
    """A model the contract accepts by default (a scenario may change the cost or add more)."""

    model_id: str
    task_type: Kind
    cost: int  # credits per task: the seed's price where it shows one (SEED_PRICED), else mockgen's
    title: str  # what the seed calls it


# The seed's table, in its order (the order error messages list them in).
MODELS: Final[dict[str, Model]] = {
    m.model_id: m
    for m in (
        Model("seedance-2", "video", 60, "Seedance 2.0 (text / image to video)"),
        Model("gpt-image-2", "image", 15, "ChatGPT Image 2 (text / image to image)"),
        Model("nano-banana-2", "image", 8, "Nano Banana 2 (text / image to image)"),
    )
}
SEED_MODEL: Final = "gpt-image-2"  # the model of the seed's examples
SEED_PRICED: Final = frozenset({SEED_MODEL})  # the only price the seed shows (15, in its create answer)

# --- aspect ratios ----------------------------------------------------------------------------

# The seed shows "16:9"; the rest are the ratios such APIs take (mockgen renders every one).
RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")
KIND_RATIOS: Final[dict[str, tuple[str, ...]]] = {"image": RATIOS, "video": RATIOS}
DEFAULT_RATIO: Final[dict[str, str]] = {"image": "1:1", "video": "16:9"}  # when a create sends none

# --- task statuses ----------------------------------------------------------------------------

QUEUED, RUNNING, SUCCEEDED, FAILED = 1, 2, 3, 4
STATUSES: Final[dict[int, str]] = {QUEUED: "queued", RUNNING: "running", SUCCEEDED: "success", FAILED: "failed"}
FINAL_STATUSES: Final = (SUCCEEDED, FAILED)  # poll until one of these

# --- the answers ------------------------------------------------------------------------------

ENVELOPE_KEYS: Final = ("code", "msg", "data")
CODE_OK: Final = 200
CODE_FAILED: Final = 0  # a business failure, sent with HTTP 200
CODE_AUTH: Final = 401  # a missing or bad key, sent with HTTP 401
CREATE_FIELDS: Final = ("model_id", "prompt", "image_urls", "aspect_ratio")  # the create request's
CREATE_REQUIRED: Final = ("model_id", "prompt")
CREATE_KEYS: Final = ("task_id", "request_id", "credits")  # the create answer's data, in order
# The poll answer's data, in order (api.polled writes them in this order).
POLL_KEYS: Final = (
    "task_id", "task_status", "task_type", "model_id", "image_url", "video_url", "audio_url", "credits", "created_at",
)  # fmt: skip
REQUEST_ID_PREFIX: Final = "kie_"  # the seed's request_id: "kie_xxxxxxxxxxxx"

_QUERY_PATH_TEXT = QUERY_PATH.replace("{", "{{").replace("}", "}}")  # literal braces in a Msg template


class Msg:
    """Every message the public contract sends, in one place (templates take ``str.format`` fields)."""

    SUBMITTED = "提交成功,等待生成"  # the seed's text, with an ASCII comma
    OK = "ok"
    NO_AUTH = "Missing Authorization header: send 'Authorization: Bearer sk-...' with your API key."
    BAD_SCHEME = "Authorization must use the Bearer scheme: 'Authorization: Bearer sk-...'."
    BAD_KEY = "Malformed API key: expected 'sk-' followed by 32 letters or digits."
    UNKNOWN_KEY = "Unknown API key: this key is not registered. Use a key from your account page."
    NOT_JSON = "Request body is not valid JSON: {detail}. Send a JSON object with model_id and prompt."
    NOT_OBJECT = 'Request body must be a JSON object like {{"model_id": ..., "prompt": ...}}, not {kind}.'
    NO_MODEL = "model_id is required. Use one of: {models}."
    BAD_MODEL = "Unknown model_id {value}. Use one of: {models}."
    NO_PROMPT = "prompt is required and must be a non-empty string."
    LONG_PROMPT = "prompt is too long: {length} characters (the limit is {limit})."
    BAD_RATIO = "aspect_ratio {value} is not supported. Use one of: {ratios}."
    BAD_IMAGES = "image_urls must be a list of http(s) URLs; {detail}."
    NO_CREDITS = "Insufficient credits: this task costs {cost} and the balance is {balance}. Top up to continue."
    NOT_FOUND = "Task not found: {task_id}. Check the task_id returned by " + CREATE_PATH + "."
    BAD_STEER = "{header} must be {expected}, not {value!r}."
    GENERATION_FAILED = "Generation failed: the model could not produce a result. Credits were refunded."
    NO_ROUTE = "No route {method} {path}. The API has POST " + CREATE_PATH + " and GET " + _QUERY_PATH_TEXT + "."
    BAD_METHOD = "Method {method} is not allowed on {path}."
    NO_FILE = "No result file {name}: the task does not exist or has not succeeded."
    NO_TASK = "no task {task_id!r}"  # the control API's 404 for a task id (any account's)
    # ...and those that say a bound was met (the public API's and the control API's)
    WAITERS_FULL = (
        "{limit} long-polls are waiting already (the limit): retry after Retry-After seconds, or wait for "
        "several requests in one long-poll (count=N, path=/api/v1/*)."
    )
    NEXT_FULL = (
        "The queue of next outcomes holds {limit} entries (the limit): submits use them up, "
        "DELETE /_mock/next empties it, and so does POST /_mock/reset."
    )
    TOO_MANY_ACCOUNTS = (
        "The mock holds {limit} accounts, its limit: a new key cannot be charged or topped up (existing accounts"
        " keep working). Restart with a higher --max-accounts (MOCKGEN_MAX_ACCOUNTS), or reset the world."
    )
    TOO_MANY_TASKS = (
        "The mock holds {limit} unfinished tasks, its limit (--max-tasks): none can be dropped while a client"
        " may still poll it. Let some finish, resolve them, or restart with a higher --max-tasks (MOCKGEN_MAX_TASKS)."
    )
    RESET = "The mock was reset while this request was in flight; retry."
    STORE_DOWN = "The mock's shared store is unavailable right now; retry in a moment."
