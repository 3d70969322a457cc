"""The token schedule on its own (no database, no broker): when tokens are fresh, when grants come
due, how long failures wait, and how long a lost answer's refresh token may be sent again."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider_auth.oauth.specs import SPECS, OAuthSpec
from provider_auth.providers import Provider
from provider_auth.tokens.grants import GrantType
from provider_auth.tokens.policy import (
    DAY,
    TokenPolicy,
    backoff,
    cache_until,
    due_at,
    gives_up,
    handed_over_refresh_expiry,
    in_backoff,
    is_due,
    is_fresh,
    is_valid,
    keepalive_at,
    may_reuse,
    refresh_expiry,
    remembers_lost_answers,
    retry_in,
)

XERO, QUICKBOOKS = SPECS[Provider.XERO], SPECS[Provider.QUICKBOOKS]
ZOHO, NETSUITE = SPECS[Provider.ZOHO_BOOKS], SPECS[Provider.NETSUITE]
# Room for the rounding of sums of epoch seconds (about 2e-6 s at 1e10).
EPSILON = 1e-3

instants = st.floats(min_value=0, max_value=4e9, allow_nan=False)
spans = st.floats(min_value=0, max_value=400 * DAY, allow_nan=False)
specs = st.sampled_from([SPECS[p] for p in SPECS])
policies = st.builds(
    TokenPolicy,
    skew=st.floats(min_value=0, max_value=3600),
    window=st.floats(min_value=0, max_value=7200),
    jitter=st.floats(min_value=0, max_value=3600),
    max_transient_failures=st.integers(min_value=1, max_value=20),
    backoff_base=st.floats(min_value=0.001, max_value=60),
    backoff_cap=st.floats(min_value=0.001, max_value=3600),
    cache_seconds=st.floats(min_value=0, max_value=600),
    keepalive_margin=st.floats(min_value=0, max_value=30 * DAY),
)
rngs = st.randoms(use_true_random=False)


@given(policies, specs, instants, spans, rngs)
def test_an_access_token_comes_due_in_the_second_half_of_its_life(
    policy: TokenPolicy, spec: OAuthSpec, now: float, remaining: float, rng: random.Random
) -> None:
    expires = now + remaining
    due = due_at(policy, spec, GrantType.REFRESH_TOKEN, expires, None, now, rng)
    assert due is not None
    assert now + remaining / 2 - EPSILON <= due <= expires + EPSILON


@given(policies, specs, instants, spans, rngs)
def test_a_due_time_leaves_at_least_the_skew_when_the_token_lives_long_enough(
    policy: TokenPolicy, spec: OAuthSpec, now: float, remaining: float, rng: random.Random
) -> None:
    """The refresher renews before callers would have to (they want `skew` seconds left)."""
    expires = now + remaining
    due = due_at(policy, spec, GrantType.REFRESH_TOKEN, expires, None, now, rng)
    assert due is not None
    if policy.window >= policy.skew and remaining >= 2 * policy.skew:
        assert due <= expires - policy.skew + EPSILON


@given(policies, specs, instants, spans, rngs)
def test_the_jitter_stays_inside_the_window(
    policy: TokenPolicy, spec: OAuthSpec, now: float, remaining: float, rng: random.Random
) -> None:
    expires = now + remaining
    due = due_at(policy, spec, GrantType.REFRESH_TOKEN, expires, None, now, rng)
    assert due is not None
    if remaining >= 2 * (policy.window + policy.jitter):
        assert expires - policy.window - policy.jitter - EPSILON <= due <= expires - policy.window + EPSILON


def test_the_jitter_spreads_tokens_stored_together() -> None:
    policy, rng = TokenPolicy(window=600, jitter=120), random.Random(7)
    dues = {due_at(policy, XERO, GrantType.REFRESH_TOKEN, 10_000.0, None, 0.0, rng) for _ in range(50)}
    assert len(dues) == 50
    assert all(due is not None and 10_000 - 720 <= due <= 10_000 - 600 for due in dues)


@given(policies, st.sampled_from([XERO, QUICKBOOKS]), instants, spans, rngs)
def test_an_idle_refresh_token_is_used_before_it_dies(
    policy: TokenPolicy, spec: OAuthSpec, now: float, remaining: float, rng: random.Random
) -> None:
    refresh_expires = now + remaining
    keepalive = keepalive_at(policy, spec, GrantType.REFRESH_TOKEN, refresh_expires, now)
    assert keepalive is not None
    assert keepalive <= refresh_expires
    if remaining >= 1 and policy.keepalive_margin >= EPSILON:
        assert keepalive < refresh_expires
    # Not before three quarters of its remaining life, and at most the margin before its end.
    assert now + 3 * remaining / 4 - EPSILON <= keepalive
    assert refresh_expires - keepalive <= policy.keepalive_margin + EPSILON
    # A long-lived access token does not push the keep-alive back.
    due = due_at(policy, spec, GrantType.REFRESH_TOKEN, refresh_expires + DAY, refresh_expires, now, rng)
    assert due is not None and due <= keepalive


@given(policies, instants, spans)
def test_only_refresh_tokens_that_die_unused_are_kept_alive(
    policy: TokenPolicy, now: float, remaining: float
) -> None:
    # Zoho's refresh token never expires; a client credentials grant has none.
    assert keepalive_at(policy, ZOHO, GrantType.REFRESH_TOKEN, now + remaining, now) is None
    assert keepalive_at(policy, NETSUITE, GrantType.CLIENT_CREDENTIALS, now + remaining, now) is None
    assert keepalive_at(policy, XERO, GrantType.REFRESH_TOKEN, None, now) is None


def test_quickbooks_keepalive_is_a_week_before_the_hundred_days_run_out() -> None:
    policy = TokenPolicy()
    assert keepalive_at(policy, QUICKBOOKS, GrantType.REFRESH_TOKEN, 100 * DAY, 0.0) == 93 * DAY
    # Two days left: a quarter of them, 12 hours, before the end.
    assert keepalive_at(policy, QUICKBOOKS, GrantType.REFRESH_TOKEN, 2 * DAY, 0.0) == 1.5 * DAY


def test_nothing_to_renew_has_no_due_time() -> None:
    rng = random.Random(1)
    assert due_at(TokenPolicy(), ZOHO, GrantType.REFRESH_TOKEN, None, None, 0.0, rng) is None
    assert due_at(TokenPolicy(), XERO, GrantType.REFRESH_TOKEN, None, 5 * DAY, 0.0, rng) is not None


def test_an_expired_token_is_due_at_once() -> None:
    due = due_at(TokenPolicy(), XERO, GrantType.REFRESH_TOKEN, 999.0, None, 1000.0, random.Random(3))
    assert due is not None and due <= 1000.0


@given(st.integers(min_value=0, max_value=4 * 10**9), st.integers(min_value=0, max_value=7200))
def test_xero_reuses_a_lost_answers_refresh_token_for_thirty_minutes_only(lost_at: int, after: int) -> None:
    assert may_reuse(XERO, float(lost_at), float(lost_at + after)) is (after < 30 * 60)


@given(st.floats(min_value=0, max_value=4e9), st.floats(min_value=0, max_value=400 * DAY))
def test_without_a_documented_grace_the_provider_decides(lost_at: float, after: float) -> None:
    # QuickBooks rotates without a documented grace: retried until it answers. Zoho never rotates.
    assert may_reuse(QUICKBOOKS, lost_at, lost_at + after)
    assert may_reuse(ZOHO, lost_at, lost_at + after)


def test_a_lost_answer_is_remembered_only_where_the_refresh_token_may_have_rotated() -> None:
    assert remembers_lost_answers(XERO, GrantType.REFRESH_TOKEN)
    assert remembers_lost_answers(QUICKBOOKS, GrantType.REFRESH_TOKEN)
    assert not remembers_lost_answers(ZOHO, GrantType.REFRESH_TOKEN)
    assert not remembers_lost_answers(NETSUITE, GrantType.CLIENT_CREDENTIALS)


@given(policies, st.integers(min_value=1, max_value=10**6), rngs)
def test_backoff_doubles_up_to_the_cap_with_jitter(
    policy: TokenPolicy, failures: int, rng: random.Random
) -> None:
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2.0 ** min(failures - 1, 60))
    delay = backoff(policy, failures, None, rng)
    assert ceiling / 2 - EPSILON <= delay <= ceiling + EPSILON


@given(policies, st.integers(min_value=1, max_value=10**6), st.floats(min_value=0, max_value=10**6), rngs)
def test_retry_after_is_honoured_up_to_the_cap(
    policy: TokenPolicy, failures: int, retry_after: float, rng: random.Random
) -> None:
    delay = backoff(policy, failures, retry_after, rng)
    assert min(retry_after, policy.backoff_cap) <= delay <= policy.backoff_cap + EPSILON


@given(policies, st.integers(min_value=0, max_value=100))
def test_a_grant_is_given_up_only_once_its_access_token_no_longer_works(
    policy: TokenPolicy, failures: int
) -> None:
    assert not gives_up(policy, failures, access_valid=True)
    assert gives_up(policy, failures, access_valid=False) is (failures >= policy.max_transient_failures)


@given(policies, instants, st.floats(min_value=-DAY, max_value=DAY))
def test_fresh_is_valid_for_at_least_the_skew(policy: TokenPolicy, now: float, left: float) -> None:
    expires = now + left
    assert is_fresh(policy, expires, now) is (expires - now >= policy.skew)
    assert is_valid(expires, now) is (expires > now)
    if is_fresh(policy, expires, now) and policy.skew > 0:
        assert is_valid(expires, now)
    assert not is_fresh(policy, None, now) and not is_valid(None, now)


@given(policies, instants, st.floats(min_value=0, max_value=DAY))
def test_the_cache_serves_a_token_only_while_fresh_and_for_a_bounded_time(
    policy: TokenPolicy, now: float, left: float
) -> None:
    expires = now + left
    until = cache_until(policy, expires, now)
    assert until <= expires - policy.skew
    assert until <= now + policy.cache_seconds


@given(instants, st.floats(min_value=1, max_value=400 * DAY))
def test_the_refresh_tokens_expiry_after_a_refresh(now: float, expires_in: float) -> None:
    # The provider's own figure wins; else the inactivity lifetime restarts; else the stored one stays.
    assert refresh_expiry(QUICKBOOKS, GrantType.REFRESH_TOKEN, expires_in, now) == now + expires_in
    assert refresh_expiry(XERO, GrantType.REFRESH_TOKEN, None, now) == now + 60 * DAY
    assert refresh_expiry(ZOHO, GrantType.REFRESH_TOKEN, None, now) is None
    assert refresh_expiry(NETSUITE, GrantType.CLIENT_CREDENTIALS, None, now) is None


def test_a_handed_over_refresh_tokens_expiry() -> None:
    assert handed_over_refresh_expiry(XERO, 123.0, 0.0) == 123.0
    assert handed_over_refresh_expiry(QUICKBOOKS, None, 10.0) == 10.0 + 100 * DAY
    assert handed_over_refresh_expiry(ZOHO, None, 10.0) is None


@given(st.one_of(st.none(), instants), instants)
def test_waits_are_never_negative(next_attempt_at: float | None, now: float) -> None:
    wait = retry_in(next_attempt_at, now)
    assert (wait is None) is (next_attempt_at is None)
    assert wait is None or wait >= 0
    assert in_backoff(next_attempt_at, now) is (wait is not None and wait > 0)


@pytest.mark.parametrize(
    ("due", "now", "expected"), [(None, 10.0, False), (10.0, 10.0, True), (11.0, 10.0, False)]
)
def test_a_grant_is_due_once_its_time_has_come(due: float | None, now: float, expected: bool) -> None:
    assert is_due(due, now) is expected
