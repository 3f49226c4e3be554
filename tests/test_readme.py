"""README's programmatic example runs as written and computes what its
comments say."""

import os
import re

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_math_core_snippet_runs_as_written():
  readme = open(os.path.join(REPO, "README.md")).read()
  section = readme[readme.index("### The math core"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  terms, z, l_k = namespace["terms"], namespace["z"], namespace["l_k"]
  assert z.shape == (10, 32, 8)
  assert namespace["posterior"].mean.shape == (32, 8)
  for values in (terms.elbo, namespace["terms_mc"].elbo, l_k):
    assert values.shape == (32,) and np.all(np.isfinite(values))
  np.testing.assert_allclose(terms.elbo, terms.reconstruction - terms.kl,
                             rtol=1e-5)
  # L_K ≥ ELBO in expectation; at K = 1000 the batch mean is far above.
  assert np.mean(l_k) > np.mean(terms.elbo)
