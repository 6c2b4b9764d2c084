"""HitVerifier: each check on hand-written pairs from many domains, the paraphrases it must
let through, and its use as a SemanticCache verifier."""

from __future__ import annotations

import pytest

from embedders import WordsEmbedder
from routeguard.cache.lexicon import stem
from routeguard.cache.semantic import SemanticCache
from routeguard.cache.verify import CHECKS, DEFAULT_CHECKS, HitVerifier, analyse

verifier = HitVerifier()
every_check = HitVerifier(CHECKS)


def refused_by(query: str, cached: str) -> str | None:
    refusal = verifier.explain(query, cached)
    return None if refusal is None else refusal.check


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("iPhone 13 battery life", "iPhone 12 battery life"),
        ("best laptops under $800", "best laptops under $500"),
        ("What changed in Python 3.12?", "What changed in Python 3.11?"),
        ("How many calories in 2 eggs?", "How many calories in 3 eggs?"),
        ("Is a 5 km run enough exercise?", "Is a 5 mile run enough exercise?"),
        ("What happened in 1969?", "What happened in 1968?"),
        ("Is GPT-4 better at maths?", "Is GPT-3.5 better at maths?"),
        ("Who won the second world war?", "Who won the first world war?"),
        ("How do I lose 10 pounds?", "How do I lose weight?"),
        ("Can five people share a Netflix account?", "Can four people share a Netflix account?"),
    ],
)
def test_numbers_refused(query: str, cached: str) -> None:
    assert refused_by(query, cached) == "numbers"
    assert refused_by(cached, query) == "numbers"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How do I lose 10 kg in one month?", "How can I lose ten kilos in a month?"),
        ("Is 1,000 mg of vitamin C too much?", "Is 1000 mg of vitamin C too much?"),
        ("Price of a 2 bedroom flat in Lisbon", "How much is a two-bedroom flat in Lisbon?"),
        ("Which one is better for gaming?", "Which is better for gaming?"),
        ("iPhone 13 battery life", "battery life of the iPhone13"),
    ],
)
def test_same_numbers_pass(query: str, cached: str) -> None:
    assert refused_by(query, cached) != "numbers"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What are the top 5 hiking trails in Utah?", "What are the best hiking trails in Utah?"),
        ("Which two types of plant hormones exist?", "Which types of plant hormones exist?"),
        ("Datasets with thousands of images", "Datasets with several thousand images"),
    ],
)
def test_bare_counts_only_one_side_pass(query: str, cached: str) -> None:
    assert refused_by(query, cached) is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What are the best laptops of 2023?", "What are the best laptops?"),
        ("Is Windows 10 safe?", "Is Windows safe?"),
        ("Is $300 enough for a week in Rome?", "Is it enough for a week in Rome?"),
    ],
)
def test_years_versions_quantities_one_side_refused(query: str, cached: str) -> None:
    assert refused_by(query, cached) == "numbers"


def test_one_sided_numbers_can_be_allowed() -> None:
    lenient = HitVerifier(["numbers"], one_sided_numbers=False)
    assert lenient("How do I lose 10 pounds?", "How do I lose weight?")
    assert not lenient("iPhone 13 battery life", "iPhone 12 battery life")


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
        ("Why does my laptop charge?", "Why doesn't my laptop charge?"),
        ("Recipes with eggs", "Recipes without eggs"),
        ("Is it legal to record a phone call?", "Is it illegal to record a phone call?"),
        ("Is this plugin useful?", "Is this plugin useless?"),
        ("Can I ever travel to Mars?", "Can I never travel to Mars?"),
    ],
)
def test_negation_refused(query: str, cached: str) -> None:
    assert refused_by(query, cached) == "negation"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Why can't I sleep at night?", "Why am I unable to sleep at night?"),
        ("Why doesn't my car start?", "Why does my car not start?"),
        ("How do I cook rice without a rice cooker?", "How can I cook rice with no rice cooker?"),
    ],
)
def test_negation_both_sides_pass(query: str, cached: str) -> None:
    assert refused_by(query, cached) is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Is coffee good for you?", "Is coffee good for you or not?"),
        ("Can a plane fly upside down?", "Can a plane fly upside down, and why or why not?"),
        ("How do I know if she likes me?", "How do I know whether or not she likes me?"),
        ("Who was the no. 1 tennis player in 2010?", "Who was the number 1 tennis player in 2010?"),
    ],
)
def test_alternatives_are_not_negations(query: str, cached: str) -> None:
    assert refused_by(query, cached) is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("When did the Roman Empire fall?", "Why did the Roman Empire fall?"),
        ("Where was Mozart born?", "When was Mozart born?"),
        ("Who invented the telephone?", "When was the telephone invented?"),
        ("How many moons does Jupiter have?", "Why does Jupiter have moons?"),
    ],
)
def test_question_asks_for_something_else(query: str, cached: str) -> None:
    assert refused_by(query, cached) == "question"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What makes people procrastinate?", "Why do people procrastinate?"),
        ("What do people mean when they say time is money?", "Why do people say time is money?"),
        ("In which year did the Berlin Wall fall?", "When did the Berlin Wall fall?"),
    ],
)
def test_open_questions_match_any_kind(query: str, cached: str) -> None:
    assert refused_by(query, cached) is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What is the best phone of the year?", "What is the worst phone of the year?"),
        ("When is the best time to buy a house?", "When is the best time to sell a house?"),
        ("What should I eat before a run?", "What should I eat after a run?"),
        ("How to increase blood pressure", "How to decrease blood pressure"),
        ("How do I upload files to Dropbox?", "How do I download files from Dropbox?"),
    ],
)
def test_opposites_refused(query: str, cached: str) -> None:
    assert refused_by(query, cached) == "opposites"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Python books for beginners", "Python books for experts"),
        ("Chess openings for a novice", "Chess openings for advanced players"),
        ("Good exercises for kids", "Good exercises for adults"),
        ("Best running shoes for men", "Best running shoes for women"),
        ("Is the museum open on Monday?", "Is the museum open on Sunday?"),
        ("What to plant in spring", "What to plant in autumn"),
    ],
)
def test_qualifiers_refused(query: str, cached: str) -> None:
    assert refused_by(query, cached) == "qualifiers"


def test_qualifier_synonyms_pass() -> None:
    assert refused_by("Guitar lessons for beginners", "Guitar lessons for a novice") is None
    assert refused_by("Toys for children", "Toys for kids") is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How do cats see dogs?", "How do dogs see cats?"),
        ("How do I convert PDF to Word?", "How do I convert Word to PDF?"),
        ("Flights from Paris to London", "Flights from London to Paris"),
        ("Is Messi better than Ronaldo?", "Is Ronaldo better than Messi?"),
        ("Can a lion kill a tiger?", "Can a tiger kill a lion?"),
        ("How to migrate from MySQL to Postgres", "How to migrate from Postgres to MySQL"),
    ],
)
def test_swapped_roles_refused(query: str, cached: str) -> None:
    assert refused_by(query, cached) == "roles"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "What is the difference between a virus and bacteria?",
            "What is the difference between bacteria and a virus?",
        ),
        ("Who is taller, Messi or Ronaldo?", "Who is taller, Ronaldo or Messi?"),
        ("Compare Python with Java", "Compare Java with Python"),
        ("In Java, how do I reverse a string?", "How do I reverse a string in Java?"),
        (
            "How do I transfer money from PayPal to my bank?",
            "How do I transfer money to my bank from PayPal?",
        ),
        ("For beginners, which guitar is best?", "Which guitar is best for beginners?"),
    ],
)
def test_reordered_but_same_roles_pass(query: str, cached: str) -> None:
    assert refused_by(query, cached) is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "What do Messi fans think of the World Cup final?",
            "How do Ronaldo supporters feel about the World Cup final?",
        ),
        ("How do I deploy a Django app on AWS?", "How can I deploy a Flask app to Azure?"),
        ("Is Tesla stock a good buy?", "Should I buy shares of Apple?"),
        ("Messi fans", "Ronaldo fans"),
        ("Do Yankees fans hate Red Sox fans?", "Do Dodgers fans hate Red Sox fans?"),
    ],
)
def test_entities_refused(query: str, cached: str) -> None:
    assert refused_by(query, cached) == "entities"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What is the capital of the United States?", "What is the capital of the USA?"),
        ("How do I install Docker on Ubuntu?", "Installing docker on ubuntu: how?"),
        ("Is the iPhone worth buying?", "Should I buy an iPhone?"),
    ],
)
def test_same_entities_pass(query: str, cached: str) -> None:
    assert refused_by(query, cached) is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("messi fans", "ronaldo fans"),
        ("How do I learn python?", "How do I learn java?"),
        ("Can cats eat grapes?", "Can dogs eat grapes?"),
        ("What is the best laptop for programming?", "What is the best laptop for gaming?"),
        ("How long do you boil an egg?", "How long do you boil a potato?"),
    ],
)
def test_substitution_refused(query: str, cached: str) -> None:
    refusal = verifier.explain(query, cached)
    assert refusal is not None and refusal.check == "substitution"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How can I learn Python fast?", "How can I learn Python quickly?"),
        ("How do I make money online?", "How can I earn money online?"),
        ("What is a good movie to watch tonight?", "What is a good film to watch tonight?"),
        ("How do I fix this error in my code?", "How do I solve this error in my code?"),
        ("How do I recieve a package?", "How do I receive a package?"),
        ("How can I learn Python fast?", "What is the quickest way to learn Python?"),
        ("What are some tips to sleep better?", "How can I improve my sleep?"),
        ("How do I reset my router password?", "Resetting the password of my router"),
    ],
)
def test_paraphrases_pass(query: str, cached: str) -> None:
    assert every_check(query, cached), every_check.explain(query, cached)


def test_identical_texts_pass_every_check() -> None:
    text = "Is it not safe to fly a 2 kg drone from Paris to London for beginners?"
    assert every_check.explain(text, text) is None


def test_refusal_names_check_and_words() -> None:
    refusal = verifier.explain("iPhone 13 battery life", "iPhone 12 battery life")
    assert refusal is not None and refusal.check == "numbers"
    assert "13" in refusal.reason and "12" in refusal.reason
    assert str(refusal).startswith("numbers: ")


def test_checks_can_be_chosen_and_refusals_are_counted() -> None:
    only_numbers = HitVerifier(["numbers"])
    assert only_numbers("How do cats see dogs?", "How do dogs see cats?")
    assert not only_numbers("iPhone 13", "iPhone 12")
    assert only_numbers.refusals == {"numbers": 1}
    assert HitVerifier().checks == DEFAULT_CHECKS == CHECKS
    with pytest.raises(ValueError, match="unknown verifier checks"):
        HitVerifier(["numbers", "vibes"])


def test_analysis_expands_contractions_and_numbers() -> None:
    a = analyse("I can't pay $1,200 for twenty five GB")
    assert a.words[:3] == ("i", "can", "not") and a.negations == ("not",)
    assert a.numbers == {"1200": True, "25": True}
    assert a.units["1200"] == {"usd"} and a.units["25"] == {"gb"}
    assert stem("studies") == stem("studying") == stem("study")
    assert stem("bigger") == stem("big") and stem("cats") == stem("cat")


def test_semantic_cache_consults_the_verifier() -> None:
    cache = SemanticCache(WordsEmbedder(), threshold=0.5, verifier=HitVerifier())
    cache.put("how do I upgrade to python 3.12 on ubuntu", "use deadsnakes")
    assert cache.get("how do I upgrade to python 3.11 on ubuntu") is None
    assert cache.metrics.rejected == 1
    hit = cache.get("how do I upgrade to python 3.12 on ubuntu please")
    assert hit is not None and hit.response == "use deadsnakes"
