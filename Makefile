# Every target sets up its own virtual environment first, so each works on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo survey test clean browser

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 -e '.[test,openvino,serve,ray,llm]'
	@$(MAKE) --no-print-directory browser
	touch $(STAMP)

# Headless Chromium and its driver for the audit report's browser test (Debian's packages, where
# apt-get can install them: as root, or with passwordless sudo); without them that test skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then echo "note: no apt-get: the browser test of the audit report will skip"; \
	else SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  ( $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	    ( $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ) ) \
	  || echo "note: could not install chromium: the browser test of the audit report will skip"; fi

# The main job: build the default reference DB (zoo models x every CPU platform), train and
# evaluate the classifier, then identify a hidden platform from its outputs (hspi demo).
demo: $(STAMP)
	$(BIN)/hspi demo

# Export the zoo, run every available CPU platform twice in fresh processes,
# print the equivalence classes of bit-identical platforms.
survey: $(STAMP)
	$(BIN)/hspi survey

# Lint and format check (ruff) and type checks (mypy on the whole library; both configured in pyproject.toml), then
# the test suite; pytest's exit code 5 (no tests collected) counts as a failure.
test: $(STAMP)
	$(BIN)/ruff check hspi_onnx runtimes models tests bench
	$(BIN)/ruff format --check hspi_onnx runtimes models tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info
