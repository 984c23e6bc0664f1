# install-packages PACKAGE...: install what is missing, without recommends or prompts; keep existing config files.
# A step killed halfway through an install leaves dpkg interrupted; finishing its work first mends that.
dpkg --configure -a
missing=""
for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q ' installed$'; then
        missing="$missing $package"
    fi
done
if [ -z "$missing" ]; then
    echo "all $# packages already installed"
    exit 0
fi
echo "installing:$missing"
apt-get -q -y --no-install-recommends -o DPkg::Lock::Timeout=120 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install "$@"
