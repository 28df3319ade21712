"""A tiny hand-written conversation for environment tests that must not depend on the generator."""

from memenv.sources import ConversationSource
from memenv.types import Conversation, GoldFact, Question, Session, Turn


def tiny_conversation() -> Conversation:
    s0 = Session(
        0, "1 May 2023",
        (Turn("Alice", "I live in Paris and I play the violin.", "D1:1"), Turn("Bob", "Nice, I work as a nurse.", "D1:2")),
        (GoldFact("Alice lives in Paris.", "ADD", "Alice", "Alice/city"),
         GoldFact("Bob works as a nurse.", "ADD", "Bob", "Bob/job")),
        ("Alice lives in Paris.", "Bob works as a nurse."),
    )
    s1 = Session(
        1, "9 May 2023",
        (Turn("Alice", "I moved to Lyon yesterday!", "D2:1"), Turn("Bob", "Wow, congratulations.", "D2:2")),
        (GoldFact("Alice moved to Lyon on 8 May 2023.", "UPDATE", "Alice", "Alice/city", "Alice lives in Paris."),),
        ("Alice moved to Lyon on 8 May 2023.", "Bob works as a nurse."),
    )
    questions = (
        Question("q0", "What is Bob's job?", "nurse", "single-hop", (0,)),
        Question("q1", "Where does Alice live?", "Lyon", "knowledge-update", (0, 1)),
    )
    return Conversation("tiny", ("Alice", "Bob"), (s0, s1), questions)


class TinySource(ConversationSource):
    """One fixed two-session conversation."""

    def keys(self):
        return ["tiny"]

    def get(self, key):
        if key != "tiny":
            raise ValueError(f"unknown conversation {key!r}")
        return tiny_conversation()


class LongSource(ConversationSource):
    """``n`` short sessions and no questions: many manage turns in a row."""

    def __init__(self, n: int = 40):
        turns = (Turn("Alice", "Nothing much today.", "D:1"), Turn("Bob", "Same here.", "D:2"))
        self.conv = Conversation(
            f"long-{n}", ("Alice", "Bob"),
            tuple(Session(i, f"{i + 1} May 2023", turns) for i in range(n)), (),
        )

    def keys(self):
        return [self.conv.conv_id]

    def get(self, key):
        return self.conv


def credit_conversation() -> Conversation:
    """Three sessions (8, 2 and 5 whitespace tokens of dialogue, 15 in all) and three
    questions: q0 rests on session 0, q1 on sessions 0 and 2, q2 on no session (it credits
    the last one). No question rests on session 1."""
    s0 = Session(0, "1 May 2023", (Turn("Alice", "I live in Paris.", "D1:1"), Turn("Bob", "I am a nurse.", "D1:2")))
    s1 = Session(1, "2 May 2023", (Turn("Alice", "Hi.", "D2:1"), Turn("Bob", "Hi.", "D2:2")))
    s2 = Session(2, "3 May 2023", (Turn("Alice", "I moved to Lyon.", "D3:1"), Turn("Bob", "Cool.", "D3:2")))
    questions = (
        Question("q0", "What is Bob's job?", "nurse", "single-hop", (0,)),
        Question("q1", "Where does Alice live?", "Lyon", "knowledge-update", (0, 2)),
        Question("q2", "What does Alice play?", "violin", "single-hop", ()),
    )
    return Conversation("credit", ("Alice", "Bob"), (s0, s1, s2), questions)


class CreditSource(ConversationSource):
    """The one conversation of :func:`credit_conversation`."""

    def keys(self):
        return ["credit"]

    def get(self, key):
        if key != "credit":
            raise ValueError(f"unknown conversation {key!r}")
        return credit_conversation()
