"""Training math for LoGo-GRPO: group advantages (``advantages``) and the PPO-clip loss with KL and entropy terms (``losses``)."""
