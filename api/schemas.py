"""Request schemas (pydantic) for the HTTP edge: strict, with errors naming each field.

Amounts arrive as decimal strings and leave this module as integer minor units
(``shared.ledger.money``); unknown fields are rejected, as Stripe rejects
unknown parameters.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from api.edge import MalformedRequest, check_strings
from shared.ledger.errors import FailureCode, TallyError
from shared.ledger.money import CURRENCY_PATTERN, exponent_of, parse_amount
from shared.ledger.states import TransactionType
from shared.rendering import TransactionStatus
from shared.rendering import TransactionType as TransactionKind
from shared.services.bulk_retry import BULK_RETRY_LIMIT_MAX, RetryFilter
from shared.services.groups import LegRequest
from shared.services.holds import (
    HOLD_EXPIRES_IN_SECONDS_DEFAULT,
    HOLD_EXPIRES_IN_SECONDS_MAX,
    HoldOperation,
)
from shared.services.intake import BatchItem, TransactionRequest
from shared.services.reversals import ReversalRequest

CurrencyCode = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
OwnerRef = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40)]
MetadataValue = Annotated[str, StringConstraints(max_length=500)]

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False)
#: A positive decimal in major units as docs/api.md ("Conventions") accepts it: no sign, exponent or leading zero.
AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,15})(\.[0-9]{1,4})?$"


class WalletCreate(BaseModel):
    """``POST /v1/wallets`` body."""

    model_config = _STRICT

    owner_ref: OwnerRef
    currency: CurrencyCode


class WalletPatch(BaseModel):
    """``PATCH /v1/wallets/{id}`` body: a new status, a new overdraft limit, or both."""

    model_config = _STRICT

    status: Literal["active", "frozen"] | None = None
    # Parsed against the wallet's currency by the service, where the currency is known.
    overdraft_limit: str | None = Field(
        default=None,
        description="How far below zero debits and holds may take the available balance, "
        'in the wallet\'s currency; "0" removes the overdraft.',
        json_schema_extra={"pattern": AMOUNT_PATTERN, "examples": ["50.00"]},
    )

    @model_validator(mode="after")
    def _status_or_limit(self) -> WalletPatch:
        if self.status is None and self.overdraft_limit is None:
            raise ValueError("give status, overdraft_limit, or both")
        return self


Description = Annotated[str, StringConstraints(max_length=500)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=50)]


class _Amount(BaseModel):
    """An ``amount`` validated against its ``currency`` (ISO 4217 minor unit)."""

    model_config = _STRICT

    # currency before amount: the amount's validator reads the validated currency.
    currency: CurrencyCode
    # The pattern documents the form (OpenAPI); the validator below checks it
    # against the currency's minor unit (ISO 4217) and gives the precise error.
    amount: str = Field(json_schema_extra={"pattern": AMOUNT_PATTERN, "examples": ["10.50"]})

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, value: str) -> str:
        try:
            exponent_of(value)
        except TallyError as error:
            raise ValueError(error.detail) from None
        return value

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_fits_currency(cls, value: object, info: ValidationInfo) -> object:
        currency = info.data.get("currency")
        if currency is None:
            return value  # the currency's own error is reported
        try:
            parse_amount(value, currency)
        except TallyError as error:
            raise ValueError(error.detail) from None
        return value


class _Submission(_Amount):
    """Fields every single-leg transaction type shares."""

    description: Description | None = None
    metadata: Metadata = {}

    def to_request(self) -> TransactionRequest:
        """Return the validated submission as the intake service's request (minor units)."""
        return TransactionRequest(
            type=TransactionType(self.type),  # type: ignore[attr-defined]
            amount_minor=parse_amount(self.amount, self.currency),
            currency=self.currency,
            source_wallet_id=getattr(self, "source_wallet_id", None),
            destination_wallet_id=getattr(self, "destination_wallet_id", None),
            description=self.description,
            metadata=dict(self.metadata),
            expires_in_seconds=getattr(self, "expires_in", None),
        )


class DepositSubmission(_Submission):
    """A deposit: money from outside (the system wallet) into ``destination_wallet_id``."""

    type: Literal["deposit"]
    destination_wallet_id: uuid.UUID


class WithdrawalSubmission(_Submission):
    """A withdrawal: money from ``source_wallet_id`` out (to the system wallet)."""

    type: Literal["withdrawal"]
    source_wallet_id: uuid.UUID


class TransferSubmission(_Submission):
    """A transfer between two wallets of the same currency."""

    type: Literal["transfer"]
    source_wallet_id: uuid.UUID
    destination_wallet_id: uuid.UUID

    @model_validator(mode="after")
    def _distinct_wallets(self) -> TransferSubmission:
        if self.source_wallet_id == self.destination_wallet_id:
            raise ValueError("source_wallet_id and destination_wallet_id must differ")
        return self


class HoldSubmission(_Submission):
    """A hold: reserve ``amount`` on ``source_wallet_id`` for ``expires_in`` seconds."""

    type: Literal["hold"]
    source_wallet_id: uuid.UUID
    expires_in: int = Field(
        default=HOLD_EXPIRES_IN_SECONDS_DEFAULT, ge=1, le=HOLD_EXPIRES_IN_SECONDS_MAX
    )


class GroupLeg(_Amount):
    """One leg of a group: ``amount`` of ``currency`` between two distinct wallets."""

    source_wallet_id: uuid.UUID
    destination_wallet_id: uuid.UUID

    @model_validator(mode="after")
    def _distinct_wallets(self) -> GroupLeg:
        if self.source_wallet_id == self.destination_wallet_id:
            raise ValueError("source_wallet_id and destination_wallet_id must differ")
        return self


class GroupSubmission(BaseModel):
    """A group: 2..50 legs applied together or not at all."""

    model_config = _STRICT

    type: Literal["group"]
    legs: Annotated[list[GroupLeg], Field(min_length=2, max_length=50)]
    description: Description | None = None
    metadata: Metadata = {}

    def to_request(self) -> TransactionRequest:
        """Return the validated group as the intake service's request (minor units)."""
        legs = tuple(
            LegRequest(
                leg.source_wallet_id,
                leg.destination_wallet_id,
                parse_amount(leg.amount, leg.currency),
                leg.currency,
            )
            for leg in self.legs
        )
        return TransactionRequest(
            type=TransactionType.GROUP,
            amount_minor=sum(leg.amount_minor for leg in legs),
            currency=legs[0].currency,
            description=self.description,
            metadata=dict(self.metadata),
            legs=legs,
        )


Submission = Annotated[
    DepositSubmission
    | WithdrawalSubmission
    | TransferSubmission
    | HoldSubmission
    | GroupSubmission,
    Field(discriminator="type"),
]
SUBMISSION = TypeAdapter(Submission)


def parse_submission(body: Any) -> TransactionRequest:
    """Validate a ``POST /v1/transactions`` body and return the intake request.

    Raises:
        pydantic.ValidationError: rendered as 422 ``validation_failed`` with ``errors``.
    """
    return SUBMISSION.validate_python(body).to_request()


#: An ``Idempotency-Key``: 1..255 visible ASCII characters (draft-ietf-httpapi-idempotency-key-header).
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"
_IDEMPOTENCY_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)


class IdempotencyKeyProblem(TallyError):
    """An idempotency key is missing or malformed (400)."""

    code = "idempotency_key_missing"


def check_idempotency_key(key: object, *, name: str = "Idempotency-Key") -> str:
    """Return ``key`` if it is a valid idempotency key.

    Args:
        key: the header's value, or a batch item's ``idempotency_key``; None when absent.
        name: how the client sends it, for the error's detail.

    Raises:
        IdempotencyKeyProblem: ``idempotency_key_missing`` (absent or empty),
            ``idempotency_key_invalid`` (not 1..255 visible ASCII characters).
    """
    if key is None or key == "":
        raise IdempotencyKeyProblem(f"send {name} (1..255 visible ASCII characters)")
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise IdempotencyKeyProblem(
            f"{name} must be 1..255 visible ASCII characters", code="idempotency_key_invalid"
        )
    return key


#: The most items a batch holds.
BATCH_ITEMS_MAX = 1000
IdempotencyKey = Annotated[
    str,
    Field(
        json_schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN},
        description="The item's idempotency key, with the Idempotency-Key header's rules; "
        "missing: 400 idempotency_key_missing, malformed: 400 idempotency_key_invalid, "
        "in this item's result.",
    ),
]


def _batch_item(model: type[BaseModel]) -> type[BaseModel]:
    """Return ``model`` with an ``idempotency_key`` field: a batch item's schema."""
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{model.__name__}Item",
        __base__=model,
        __doc__=f"{model.__doc__} With its idempotency key, in a batch.",
        idempotency_key=(IdempotencyKey, ...),
    )


BatchTransaction = Annotated[
    _batch_item(DepositSubmission)  # type: ignore[valid-type]
    | _batch_item(WithdrawalSubmission)
    | _batch_item(TransferSubmission)
    | _batch_item(HoldSubmission)
    | _batch_item(GroupSubmission),
    Field(discriminator="type"),
]


class BatchSubmission(BaseModel):
    """``POST /v1/transactions/batch`` body: 1..1,000 transactions, each with its idempotency key.

    Only the list is validated here; each item is validated on its own
    (:func:`parse_batch_item`), so that a refused item refuses nothing else.
    """

    model_config = _STRICT

    transactions: Annotated[
        list[SkipValidation[BatchTransaction]],
        Field(min_length=1, max_length=BATCH_ITEMS_MAX),
    ]


def parse_batch_item(item: Any, *, api_key_id: uuid.UUID, request_id: str | None) -> BatchItem:
    """Validate one batch item as ``POST /v1/transactions`` validates its header and body.

    Args:
        item: the item as the client sent it.
        api_key_id, request_id: who sent it (``shared.services.intake.BatchItem``).

    The checks run in the single call's order: the text PostgreSQL cannot
    store (``api.edge``), the idempotency key, the body (:func:`parse_submission`).

    Raises:
        MalformedRequest: not a JSON object, or nested too deep (400).
        ValidationFailed: text PostgreSQL cannot store (422).
        IdempotencyKeyProblem: ``idempotency_key_missing`` or ``idempotency_key_invalid`` (400).
        pydantic.ValidationError: the body is not valid (422 ``validation_failed``).
    """
    if not isinstance(item, dict):
        raise MalformedRequest("each item of transactions must be a JSON object")
    body = dict(item)
    key = body.pop("idempotency_key", None)
    check_strings(body)
    key = check_idempotency_key(key, name="idempotency_key")
    return BatchItem(parse_submission(body), key, api_key_id, request_id)


class CaptureBody(BaseModel):
    """``POST /v1/transactions/{id}/capture`` body; both fields optional.

    ``amount`` is checked for its form here and against the hold's currency
    (ISO 4217 minor unit) by the service, which knows the currency.
    """

    model_config = _STRICT

    amount: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = Field(
        default=None, json_schema_extra={"pattern": AMOUNT_PATTERN}
    )
    destination_wallet_id: uuid.UUID | None = None


class VoidBody(BaseModel):
    """``POST /v1/transactions/{id}/void`` body: empty (``{}``) or absent."""

    model_config = _STRICT


def parse_hold_operation(type_: TransactionType, hold_id: uuid.UUID, body: Any) -> HoldOperation:
    """Validate a capture or void body and return the service's request.

    Raises:
        pydantic.ValidationError: rendered as 422 ``validation_failed`` with ``errors``.
    """
    if type_ is TransactionType.VOID:
        VoidBody.model_validate(body)
        return HoldOperation(type_, hold_id)
    capture = CaptureBody.model_validate(body)
    return HoldOperation(type_, hold_id, capture.amount, capture.destination_wallet_id)


class ReverseBody(BaseModel):
    """``POST /v1/transactions/{id}/reverse`` body; every field optional.

    ``amount`` (default: what is left to reverse) is checked for its form here
    and against the original's currency (ISO 4217 minor unit) by the service.
    """

    model_config = _STRICT

    amount: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = Field(
        default=None, json_schema_extra={"pattern": AMOUNT_PATTERN}
    )
    description: Description | None = None
    metadata: Metadata = {}


def parse_reversal(original_id: uuid.UUID, body: Any) -> ReversalRequest:
    """Validate a reverse body and return the service's request.

    Raises:
        pydantic.ValidationError: rendered as 422 ``validation_failed`` with ``errors``.
    """
    reverse = ReverseBody.model_validate(body)
    return ReversalRequest(original_id, reverse.amount, reverse.description, dict(reverse.metadata))


class ListQuery(BaseModel):
    """Pagination query parameters shared by every list endpoint."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None


class TransactionListQuery(ListQuery):
    """``GET /v1/transactions`` filters."""

    status: TransactionStatus | None = None
    type: TransactionKind | None = None
    wallet_id: uuid.UUID | None = None
    metadata: Metadata | None = Field(
        default=None,
        description="`metadata[KEY]=VALUE`, repeatable: only transactions whose metadata "
        "holds every pair exactly (a GIN index on metadata serves it).",
    )

    #: Parameters sent as ``name[key]=value`` (OpenAPI ``style: deepObject``).
    deep_objects: ClassVar[tuple[str, ...]] = ("metadata",)


class WalletListQuery(ListQuery):
    """``GET /v1/wallets`` filters."""

    owner_ref: OwnerRef | None = None


#: The longest wait a client may ask for, in seconds (docs/api.md, "Transactions"); ``api.asgi`` parks up to it.
WAIT_SECONDS_MAX = 30


class WaitQuery(BaseModel):
    """``GET /v1/transactions/{id}?wait=N``: seconds to hold the request, 0..``WAIT_SECONDS_MAX``."""

    model_config = ConfigDict(extra="ignore")

    wait: float = Field(default=0, ge=0, le=WAIT_SECONDS_MAX)


class BalanceQuery(BaseModel):
    """``GET /v1/wallets/{id}/balance?as_of=RFC3339``."""

    model_config = ConfigDict(extra="ignore")

    as_of: dt.datetime | None = None

    @field_validator("as_of")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("as_of must carry a time zone, e.g. 2026-11-22T10:00:00Z")
        return value


class BulkRetryBody(BaseModel):
    """``POST /v1/transactions/retry`` body (ops): which failed transactions to retry.

    Every given filter must match; ``{}`` selects the oldest failed
    transactions, up to ``limit``.
    """

    model_config = _STRICT

    failure_code: FailureCode | None = None
    since: dt.datetime | None = Field(
        default=None, description="Only those that failed at or after this RFC 3339 time."
    )
    wallet_id: uuid.UUID | None = None
    limit: int = Field(default=1000, ge=1, le=BULK_RETRY_LIMIT_MAX)
    dry_run: bool = False

    @field_validator("since")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("since must carry a time zone, e.g. 2026-11-22T10:00:00Z")
        return value

    def to_filter(self) -> RetryFilter:
        """Return the service's filter."""
        return RetryFilter(
            failure_code=None if self.failure_code is None else self.failure_code.value,
            since=self.since,
            wallet_id=self.wallet_id,
            limit=self.limit,
        )


class AuditEventListQuery(ListQuery):
    """``GET /v1/audit-events`` filters."""

    action: (
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z_.]+$")] | None
    ) = None
    target_id: uuid.UUID | None = None
