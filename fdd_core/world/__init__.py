"""A controlled problem world for measuring FDD: structured problems with exact answers,
and a simulated teacher that applies the world's operations behind the OpenAI API.

- `fdd_core.world.structure`: the latent structure of a problem, its rendering, reference
  program and the teacher's operations (complex variations, similar problems);
- `fdd_core.world.world`: the seeded splits and the index from question text to structure;
- `fdd_core.world.teacher`: the simulated teacher (fault dials, HTTP server);
- `fdd_core.world.lab`: what only a simulated world can measure (label precision,
  contamination recall).

Nothing here is a model: numbers measured with the simulated teacher say how the pipeline
behaves with an exact (or dialled-down) teacher, not how well any LLM distills.
"""

from fdd_core.world.structure import Structure, complex_variation, similar_problem
from fdd_core.world.world import Entry, World

__all__ = ["Entry", "Structure", "World", "complex_variation", "similar_problem"]
