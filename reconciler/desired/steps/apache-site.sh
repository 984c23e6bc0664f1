# apache-site NAME SITE_BASE64: write the request's Apache site, check it with apachectl configtest, then reload.
conf="/etc/apache2/sites-available/reconciler-$1.conf"
changed=no
mkdir -p /var/lib/reconciler
[ -f /var/lib/reconciler/health.txt ] || echo ok >/var/lib/reconciler/health.txt
[ -f "$conf" ] && cp -p "$conf" "$conf.previous"
if put "$conf" "$2"; then changed=yes; fi
if [ ! -e "/etc/apache2/sites-enabled/reconciler-$1.conf" ]; then a2ensite -q "reconciler-$1" >/dev/null; changed=yes; fi
# Debian's stock site comes first and would answer requests meant for this one.
if [ -e /etc/apache2/sites-enabled/000-default.conf ]; then a2dissite -q 000-default >/dev/null; changed=yes; fi
if ! apachectl configtest 2>&1; then
    if [ -f "$conf.previous" ]; then mv -f "$conf.previous" "$conf"; else a2dissite -q "reconciler-$1" >/dev/null || true; rm -f "$conf"; fi
    echo "apachectl configtest refused the site; the previous configuration was kept"
    exit 1
fi
rm -f "$conf.previous"
apply_service apache2 "$changed"
