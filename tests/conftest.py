import os

from hypothesis import HealthCheck, settings

# "ci": fixed examples (derandomized) so CI never flakes; "dev": more, random examples.
settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
