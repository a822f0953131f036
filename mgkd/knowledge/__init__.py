"""The frozen teacher's knowledge: training, caching and loading teachers; its granularity heads
and the head bank that trains each head once; and the Knowledge every distillation run receives."""
