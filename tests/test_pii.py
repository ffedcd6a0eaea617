"""Personal-data masking on English and Korean transcripts and replies."""

from __future__ import annotations

import pytest

from voice.learning.pii import mask


@pytest.mark.parametrize(
    ("text", "expected", "kinds"),
    [
        # English
        ("mail me at jane.doe+ads@example.co.uk please", "mail me at [EMAIL] please", ("email",)),
        ("it's john dot smith at gmail dot com", "it's [EMAIL]", ("email",)),
        ("call (555) 123-4567 today", "call [PHONE] today", ("phone",)),
        ("my number is 555.123.4567.", "my number is [PHONE].", ("phone",)),
        ("reach me on +1 415 555 0134", "reach me on [PHONE]", ("phone",)),
        ("card 4111 1111 1111 1111 exp 12/29", "card [CARD] exp 12/29", ("card",)),
        ("4111-1111-1111-1111", "[CARD]", ("card",)),
        ("amex 3782 822463 10005", "amex [CARD]", ("card",)),
        ("account 123456789012", "account [NUMBER]", ("number",)),
        ("London +44 20 7946 0958", "London [PHONE]", ("phone",)),
        # Korean
        ("제 번호는 010-1234-5678 이에요", "제 번호는 [PHONE] 이에요", ("phone",)),
        ("공일공 말고 01012345678로 주세요", "공일공 말고 [PHONE]로 주세요", ("phone",)),
        ("+82 10 1234 5678 으로 연락", "[PHONE] 으로 연락", ("phone",)),
        ("서울 02-123-4567", "서울 [PHONE]", ("phone",)),
        ("주민번호 900101-1234567 입니다", "주민번호 [RRN] 입니다", ("rrn",)),
        ("주민등록번호는 9001012345678", "주민등록번호는 [RRN]", ("rrn",)),
        ("이메일은 minsu.kim@naver.com 입니다", "이메일은 [EMAIL] 입니다", ("email",)),
        ("카드 번호 5500 0000 0000 0004", "카드 번호 [CARD]", ("card",)),
        ("계좌 110-123-456789 로 보내주세요", "계좌 [NUMBER] 로 보내주세요", ("number",)),
        # Numbers read out digit by digit, as a caller says them and an ASR writes them.
        (
            "my number is oh one oh, one two three four, five six seven eight",
            "my number is [NUMBER]",
            ("number",),
        ),
        ("call five five five double one two three four", "call [NUMBER]", ("number",)),
        ("it's zero one zero 1234 5678 thanks", "it's [NUMBER] thanks", ("number",)),
        ("제 번호는 공일공에 일이삼사에 오육칠팔 이에요", "제 번호는 [NUMBER] 이에요", ("number",)),
        ("공일공 일이삼사 오육칠팔로 연락 주세요", "[NUMBER]로 연락 주세요", ("number",)),
        ("번호는 010 일이삼사 5678", "번호는 [NUMBER]", ("number",)),
        # Several kinds in one reply.
        (
            "Email a@b.io or call 010-9876-5432.",
            "Email [EMAIL] or call [PHONE].",
            ("email", "phone"),
        ),
    ],
)
def test_personal_data_is_masked(text: str, expected: str, kinds: tuple[str, ...]) -> None:
    got = mask(text)
    assert got.text == expected
    assert got.kinds == kinds and got.found


@pytest.mark.parametrize(
    "text",
    [
        "What time is it?",
        "The meeting is at 4:30 p.m. on March 3rd, 2026.",
        "It costs $1,299.99, or 12,000 won.",
        "오늘 오후 3시에 만나요. 가격은 15,000원입니다.",
        "Order 25 boxes of 12 and a 2024 calendar.",
        "Room 1203, floor 12.",
        # Digit words that do not add up to a number someone could be reached by.
        "I have one dog and two cats and three fish.",
        "Oh, one more thing: press one, two or three.",
        "triple seven, oh four two",
        "이사 가는 날은 이일이에요. 오늘 오후 세시에 만나요.",
        "삼성 오일 구일 사이",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    got = mask(text)
    assert got.text == text and not got.found
