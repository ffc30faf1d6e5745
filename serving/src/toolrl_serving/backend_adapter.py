"""What the server needs from a rollout backend beyond `agenerate`: which exceptions mean 'queue full'.

(Filled in from the hf backend once it lands.)
"""

QUEUE_FULL_ERRORS: tuple[type[BaseException], ...] = ()
