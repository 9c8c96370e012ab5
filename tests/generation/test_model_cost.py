"""Model cost per credit: the current model with requests shaped for it, small images,
input budgets, the price table and the cost report, checked against what the stand-in
Claude received and counted."""

import os
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest

from app.config import Settings
from app.generation import pricing
from app.generation.budget import CHARS_PER_TOKEN, trim_to_budget
from app.generation.providers.anthropic import image_variant
from tests.apps import customer
from tests.conftest import ADMIN, ROOT
from tests.fakes.anthropic_server import image_tokens
from tests.generation.conftest import assert_reconciles, balance_of
from tests.servers import free_port


def sent_text(call: dict) -> str:
    return "".join(b["text"] for b in call["messages"][0]["content"] if b["type"] == "text")


def sent_images(call: dict) -> list[str]:
    return [b["source"]["url"] for b in call["messages"][0]["content"] if b["type"] == "image"]


async def generate(client, who, kind: str, payload: dict):
    return await client.post(
        "/v1/generations",
        json={"kind": kind, "site_id": who.site_id, "input": payload},
        headers=who.auth,
    )


# --- the model and its request shape ---


def test_the_default_model_is_the_current_haiku():
    assert Settings(_env_file=None).anthropic_model == "claude-haiku-5-5"  # type: ignore[call-arg]


async def test_haiku_5_5_requests_turn_thinking_off_and_pay_no_thinking_tokens(
    gen_client, fake_anthropic
):
    who = await customer(gen_client, 1)
    tag = uuid.uuid4().hex
    response = await generate(
        gen_client, who, "meta_title", {"page_content": f"Oak tables made in Vermont {tag}"}
    )
    assert response.status_code == 201, response.text
    [call] = fake_anthropic.calls_mentioning(tag)
    assert call["model"] == "claude-haiku-5-5"
    assert call["thinking"] == {"type": "disabled"}
    assert call["output_config"] == {"effort": "low"}
    assert not {"temperature", "top_p", "top_k"} & set(call)
    assert call["messages"][-1]["role"] == "user"  # no assistant prefill
    # What the generation records is what the stand-in billed, and no thinking in it.
    [counted] = fake_anthropic.usage_mentioning(tag)
    usage = response.json()["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        counted["input_tokens"],
        counted["output_tokens"],
    )
    assert usage["output_tokens"] < 30
    assert response.json()["model"] == "claude-haiku-5-5"


async def test_schema_requests_keep_their_output_format_beside_the_effort(
    gen_client, fake_anthropic
):
    who = await customer(gen_client, 1)
    tag = uuid.uuid4().hex
    response = await generate(
        gen_client,
        who,
        "schema",
        {"schema_type": "Organization", "page_content": f"Vermont Woodworks {tag}"},
    )
    assert response.status_code == 201, response.text
    [call] = fake_anthropic.calls_mentioning(tag)
    assert call["output_config"]["effort"] == "low"
    assert call["output_config"]["format"]["type"] == "json_schema"
    assert call["thinking"] == {"type": "disabled"}


# --- small images ---


def test_framer_images_get_the_512_variant_with_their_other_parameters_kept():
    assert (
        image_variant("https://framerusercontent.com/images/abc.png?lossless=1", 512)
        == "https://framerusercontent.com/images/abc.png?lossless=1&scale-down-to=512"
    )
    assert (
        image_variant("https://framerusercontent.com/images/a.jpg?scale-down-to=2048&x=1", 512)
        == "https://framerusercontent.com/images/a.jpg?x=1&scale-down-to=512"
    )
    # A smaller variant asked for already is kept; other hosts and 0 are unchanged.
    small = "https://framerusercontent.com/images/a.jpg?scale-down-to=256"
    assert image_variant(small, 512) == small
    other = "https://cdn.example.com/images/a.jpg?w=4000"
    assert image_variant(other, 512) == other
    assert image_variant("https://evilframerusercontent.com/a.jpg", 512).endswith("a.jpg")
    assert image_variant("https://framerusercontent.com/images/a.jpg", 0).endswith("a.jpg")


async def test_alt_text_sends_the_framer_variant_and_counts_its_tokens(gen_client, fake_anthropic):
    who = await customer(gen_client, 2)
    tag = uuid.uuid4().hex
    framer = f"https://framerusercontent.com/images/{tag}-fake-size-2400x1600.jpg?lossless=1"
    other = f"https://cdn.example.com/{tag}-fake-size-2400x1600.jpg"
    for url in (framer, other):
        response = await generate(gen_client, who, "alt_text", {"image_url": url})
        assert response.status_code == 201, response.text
    calls = fake_anthropic.calls_mentioning(tag)
    assert [sent_images(c) for c in calls] == [
        [f"https://framerusercontent.com/images/{tag}-fake-size-2400x1600.jpg"
         "?lossless=1&scale-down-to=512"],
        [other],
    ]  # fmt: skip
    framer_usage, other_usage = fake_anthropic.usage_mentioning(tag)
    # The variant: 512 x 341 px, 233 tokens; the original only gets the API's own downscale
    # (1341 x 894 px, 1,599 tokens).
    assert fake_anthropic.image_size(calls[0]["messages"][0]["content"][0]["source"]["url"]) == (
        512,
        341,
    )
    assert image_tokens(*fake_anthropic.image_size(other)) == 1599
    assert other_usage["input_tokens"] - framer_usage["input_tokens"] == 1599 - 233


async def test_a_variant_the_model_cannot_fetch_is_retried_once_with_the_original(
    gen_client, gen_sessionmaker, fake_anthropic
):
    who = await customer(gen_client, 1)
    tag = uuid.uuid4().hex
    original = f"https://framerusercontent.com/images/{tag}/fake-novariant/barn.jpg"
    response = await generate(gen_client, who, "alt_text", {"image_url": original})
    assert response.status_code == 201, response.text
    calls = fake_anthropic.calls_mentioning(tag)
    assert [sent_images(c) for c in calls] == [[original + "?scale-down-to=512"], [original]]
    assert response.json()["credits_charged"] == 1
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (0, 0)
    await assert_reconciles(gen_sessionmaker)


# --- input budgets ---


def test_content_is_cut_at_a_paragraph_then_a_sentence_never_in_a_word():
    paragraph = "Oak tables are built by hand. " * 20  # 600 characters
    text = "\n\n".join([paragraph.strip()] * 10)
    cut = trim_to_budget(text, 500)  # 1,500 characters
    assert len(cut) <= 500 * CHARS_PER_TOKEN
    assert text.startswith(cut) and text[len(cut) :].startswith("\n\n")
    one_paragraph = "Oak tables are built by hand. " * 200
    cut = trim_to_budget(one_paragraph, 100)
    assert cut.endswith("by hand.") and len(cut) <= 300
    words = "oak " * 1000
    cut = trim_to_budget(words, 100)
    assert cut.endswith("oak") and len(cut) <= 300
    assert trim_to_budget("short", 100) == "short"


async def test_a_50000_character_page_costs_about_what_a_typical_page_costs(
    gen_client, gen_settings, fake_anthropic
):
    who = await customer(gen_client, 2)
    tag = uuid.uuid4().hex
    sentence = "Our workshop in Vermont builds solid oak dining tables by hand. "
    typical = f"{tag} typical " + sentence * 40  # ~2,600 characters
    huge = (f"{tag} huge " + "\n\n".join([sentence * 8] * 200))[:50_000]
    for content in (typical, huge):
        response = await generate(gen_client, who, "meta_description", {"page_content": content})
        assert response.status_code == 201, response.text
    typical_call, huge_call = fake_anthropic.calls_mentioning(tag)
    budget_chars = gen_settings.input_budget_meta_description_tokens * CHARS_PER_TOKEN
    huge_sent = sent_text(huge_call).split("<page_content>\n", 1)[1].split("\n</page_content>")[0]
    assert len(huge_sent) <= budget_chars
    assert huge.startswith(huge_sent) and huge[len(huge_sent) :].lstrip(" ").startswith("\n\n")
    typical_usage, huge_usage = fake_anthropic.usage_mentioning(tag)
    assert huge_usage["input_tokens"] <= 2 * typical_usage["input_tokens"]
    assert huge_usage["input_tokens"] < 2_000


# --- prices and the cost report ---


def test_model_prices_override_the_published_table_in_micro_dollars():
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, model_prices='{"claude-haiku-5-5": {"input": 0.2, "output": 1}}'
    )
    prices = pricing.price_table(settings)
    assert prices["claude-haiku-5-5"] == (Decimal("0.2"), Decimal("1"))
    assert prices["claude-haiku-4-5"] == (Decimal("1"), Decimal("5"))
    # 800 in, 100 out on Haiku 4.5: 800 + 500 = 1,300 micro-dollars; Haiku 5.5 at the
    # published price: 80 + 50 = 130; economy half of it.
    assert pricing.cost_usd_micros(prices, "claude-haiku-4-5", "standard", 800, 100) == 1300
    published = pricing.PUBLISHED_PRICES
    assert pricing.cost_usd_micros(published, "claude-haiku-5-5", "standard", 800, 100) == 130
    assert pricing.cost_usd_micros(published, "claude-haiku-5-5", "economy", 800, 100) == 65
    assert pricing.cost_usd_micros(published, "unknown-model", "standard", 800, 100) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "MODEL_PRICES is not valid JSON"),
        ("[1, 2]", "MODEL_PRICES must be a JSON object"),
        ('{"m": {"input": 1}}', "exactly `input` and `output`"),
        ('{"m": {"input": -1, "output": 1}}', "non-negative"),
        ('{"m": {"input": "cheap", "output": 1}}', "must be a number"),
    ],
)
def test_model_prices_that_do_not_parse_stop_start_up_with_a_clear_message(value, message):
    environment = {
        **os.environ,
        "DATABASE_URL": "sqlite+aiosqlite:///./never-created.db",
        "MODEL_PRICES": value,
    }
    process = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(free_port())],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode != 0
    assert message in process.stderr
    assert "model_prices" in process.stderr


async def test_the_cost_report_prices_the_tokens_the_stand_in_counted(
    gen_client, gen_app, fake_anthropic
):
    before = await gen_client.get("/v1/admin/costs", headers=ADMIN)
    assert before.status_code == 200, before.text
    metrics_before = (await gen_client.get("/metrics")).text
    who = await customer(gen_client, 10)
    tag = uuid.uuid4().hex
    for index in range(3):
        response = await generate(
            gen_client, who, "meta_title", {"page_content": f"Page {index} about oak {tag}"}
        )
        assert response.status_code == 201
    failed = await generate(
        gen_client, who, "meta_title", {"page_content": f"Always too long {tag} fake:long"}
    )
    assert failed.status_code == 502
    after = await gen_client.get("/v1/admin/costs", headers=ADMIN)
    counted = fake_anthropic.usage_mentioning(tag)
    assert len(counted) == 5  # three, and the failure's two attempts
    tokens_in = sum(u["input_tokens"] for u in counted)
    tokens_out = sum(u["output_tokens"] for u in counted)

    def row(report: dict) -> dict:
        for found in report["rows"]:
            if (found["kind"], found["model"], found["priority"]) == (
                "meta_title",
                "claude-haiku-5-5",
                "standard",
            ):
                return found
        return {"generations": 0, "input_tokens": 0, "output_tokens": 0}

    old, new = row(before.json()), row(after.json())
    assert new["generations"] - old["generations"] == 4
    assert new["input_tokens"] - old["input_tokens"] == tokens_in
    assert new["output_tokens"] - old["output_tokens"] == tokens_out
    assert new["cost_usd_micros"] == pricing.cost_usd_micros(
        pricing.PUBLISHED_PRICES,
        "claude-haiku-5-5",
        "standard",
        new["input_tokens"],
        new["output_tokens"],
    )
    assert after.json()["totals"]["cost_usd_micros"] >= new["cost_usd_micros"]

    metrics_after = (await gen_client.get("/metrics")).text

    def sample(text: str, name: str, labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    tokens_label = 'direction="input",kind="meta_title",model="claude-haiku-5-5"'
    assert sample(metrics_after, "rankframe_provider_tokens_total", tokens_label) - sample(
        metrics_before, "rankframe_provider_tokens_total", tokens_label
    ) == pytest.approx(tokens_in)
    cost_label = 'kind="meta_title",model="claude-haiku-5-5",priority="standard"'
    cost_delta = sample(
        metrics_after, "rankframe_provider_cost_usd_micros_total", cost_label
    ) - sample(metrics_before, "rankframe_provider_cost_usd_micros_total", cost_label)
    assert cost_delta == pytest.approx(
        float(tokens_in * Decimal("0.1") + tokens_out * Decimal("0.5"))
    )


async def test_the_cost_report_refuses_bad_dates_and_needs_the_admin_token(gen_client):
    assert (await gen_client.get("/v1/admin/costs")).status_code == 401
    reversed_range = await gen_client.get(
        "/v1/admin/costs?from=2026-12-02&to=2026-12-01", headers=ADMIN
    )
    assert reversed_range.status_code == 200
    assert reversed_range.json()["rows"] == []
    unix_time = await gen_client.get("/v1/admin/costs?to=0", headers=ADMIN)
    assert unix_time.status_code == 422
    assert unix_time.json()["errors"][0]["loc"] == ["query", "to"]
    not_a_date = await gen_client.get("/v1/admin/costs?from=yesterday", headers=ADMIN)
    assert not_a_date.status_code == 422
    end_of_time = await gen_client.get(
        "/v1/admin/costs?from=0001-01-01&to=9999-12-31", headers=ADMIN
    )
    assert end_of_time.status_code == 200
    empty = await gen_client.get("/v1/admin/costs?from=2020-01-01&to=2020-01-31", headers=ADMIN)
    assert empty.status_code == 200
    assert empty.json() == {
        "from": "2020-01-01",
        "to": "2020-01-31",
        "rows": [],
        "totals": {
            "generations": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd_micros": 0,
            "cost_per_credit_usd_micros": None,
        },
    }


async def test_the_stand_in_counts_tokens_for_the_sdk_as_it_bills_them(fake_anthropic):
    import anthropic

    client = anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=fake_anthropic.url)
    tag = uuid.uuid4().hex
    params = {
        "model": "claude-haiku-5-5",
        "system": "Write the meta title.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "url",
                            "url": f"https://cdn.example.com/{tag}-fake-size-1092x1092.png",
                        },
                    },
                    {"type": "text", "text": f"Oak tables {tag}"},
                ],
            }
        ],
    }
    try:
        counted = await client.messages.count_tokens(**params)  # type: ignore[arg-type]
        message = await client.messages.create(max_tokens=50, **params)  # type: ignore[arg-type]
    finally:
        await client.close()
    assert counted.input_tokens == message.usage.input_tokens
    # A 1092 x 1092 image is about 1,590 tokens (Anthropic's table); the text is short.
    assert 1590 <= counted.input_tokens < 1650
    # Thinking was not turned off: Haiku 5.5 thinks (at medium effort) and bills it as output.
    assert message.content[0].type == "thinking"
    assert message.usage.output_tokens > 400
