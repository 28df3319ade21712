"""Named constants for rewards, penalties and defaults, in one place."""

# Default cost of an action that cannot be parsed or is invalid (it changes nothing): the
# environment's ``invalid_penalty`` option. A small model's first outputs are mostly
# invalid, and the penalty tells them apart from valid no-ops; the official Memory-R2 code
# has none (``invalid_penalty=0``).
INVALID_ACTION_PENALTY = 0.1

# Memory-R2 compression penalty: lambda * max(0, mem_tokens - RATIO * seen_tokens) / seen_tokens.
# The paper's sweet spot is lambda = 0.3; its official code defaults to 0.2.
DEFAULT_LAMBDA_COMP = 0.2
COMPRESSION_RATIO = 0.7

# Retrieval defaults from the official Memory-R2 / Memory-R1 settings.
DEFAULT_MANAGE_TOP_K = 25  # related memories shown per extracted fact
DEFAULT_ANSWER_TOP_K = 30  # memories shown per speaker when answering
DEFAULT_EXTRACT_TOP_K = 0  # related memories shown to the extractor
# Hard synthetic worlds keep history, so a speaker may hold 40 memories at 32 sessions:
# their registered ids show more per speaker when answering.
HARD_ANSWER_TOP_K = 48

# Observations longer than this are outside the observation space (LoCoMo sessions with a
# full answer context stay far below it).
MAX_OBSERVATION_CHARS = 2_000_000

QA_SCHEDULES = ("after_evidence", "end")

# How an answer observation orders each speaker's retrieved memories: best first, or grouped
# by session in time order (the official Memory-R2 answer prompt).
ANSWER_ORDERS = ("relevance", "session")

# Sessions per synthetic world, at most. LoCoMo conversations have up to 35 sessions; a
# 1024-session world (about 0.5 M characters of dialogue, 0.25 s to generate, 2,000+
# steps per episode) is far beyond any training horizon, and the bound stops a typo such
# as 10**9 from hanging reset() and exhausting memory.
MAX_SESSIONS = 1024

# Synthetic world seeds: training uses seeds >= TRAIN_SEED_OFFSET, evaluation (leaderboards,
# held-out tests) seeds below it, so no evaluated world is ever trained on.
TRAIN_SEED_OFFSET = 1_000_000

# Validation worlds of a training run (held out from training, far from the leaderboards'
# small evaluation seeds): seeds VALIDATION_SEED_OFFSET, VALIDATION_SEED_OFFSET + 1, ...
VALIDATION_SEED_OFFSET = 900_000
