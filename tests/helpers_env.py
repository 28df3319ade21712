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
