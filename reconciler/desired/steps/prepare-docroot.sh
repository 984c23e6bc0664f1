# prepare-docroot DIR INDEX_BASE64: make the document root and a default page; an existing page is left as it is.
mkdir -p "$1"
chmod 0755 "$1"
if [ -e "$1/index.html" ]; then
    echo "$1/index.html exists; left as it is"
else
    put "$1/index.html" "$2" || true
    echo "wrote $1/index.html"
fi
