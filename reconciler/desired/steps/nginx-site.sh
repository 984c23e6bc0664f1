# nginx-site NAME SITE_BASE64: write the request's nginx site, check it with nginx -t, then reload nginx.
conf="/etc/nginx/sites-available/reconciler-$1.conf"
link="/etc/nginx/sites-enabled/reconciler-$1.conf"
changed=no
[ -f "$conf" ] && cp -p "$conf" "$conf.previous"
if put "$conf" "$2"; then changed=yes; fi
if [ ! -L "$link" ]; then ln -sfn "$conf" "$link"; changed=yes; fi
# Debian's stock site is also a default_server: it would answer requests meant for this one.
if [ -e /etc/nginx/sites-enabled/default ]; then rm -f /etc/nginx/sites-enabled/default; changed=yes; fi
if ! nginx -t 2>&1; then
    if [ -f "$conf.previous" ]; then mv -f "$conf.previous" "$conf"; else rm -f "$conf" "$link"; fi
    echo "nginx -t refused the site; the previous configuration was kept"
    exit 1
fi
rm -f "$conf.previous"
apply_service nginx "$changed"
