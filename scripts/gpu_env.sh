# Sourced by the GPU scripts. The device image lacks constriction (nc's entropy coder, which exporting a
# hyperprior's tables and fitting code priors need): install the wheel carried in .whl/, fetched here with
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl constriction==0.5.0
# and name ".whl" in the call's carry.
if ! python3 -c "import constriction" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
