# nginx-site NAME SITE_BASE64: write the request's nginx site, check it with nginx -t, then reload nginx.
conf="/etc/nginx/sites-available/reconciler-$1.conf"
link="/etc/nginx/sites-enabled/reconciler-$1.conf"
# What nginx last loaded (see reload_site).
applied="/var/lib/reconciler/nginx-$1.applied"
mkdir -p /var/lib/reconciler
[ -f "$conf" ] && cp -p "$conf" "$conf.previous"
put "$conf" "$2" || true
[ -L "$link" ] || ln -sfn "$conf" "$link"
# Debian's stock site is also a default_server: it would answer requests meant for this one.
stock=no
if [ -e /etc/nginx/sites-enabled/default ]; then
    rm -f /etc/nginx/sites-enabled/default
    stock=yes
fi
if ! nginx -t 2>&1; then
    if [ -f "$conf.previous" ]; then mv -f "$conf.previous" "$conf"; else rm -f "$conf" "$link"; fi
    [ "$stock" = no ] || ln -s /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default
    echo "nginx -t refused the site; the previous configuration was put back"
    exit 1
fi
rm -f "$conf.previous"
reload_site nginx "$conf" "$applied"
