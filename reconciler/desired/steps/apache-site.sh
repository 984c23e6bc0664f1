# apache-site NAME SITE_BASE64: write the request's Apache site, check it with apachectl configtest, then reload.
conf="/etc/apache2/sites-available/reconciler-$1.conf"
# What Apache last loaded (see reload_site).
applied="/var/lib/reconciler/apache-$1.applied"
mkdir -p /var/lib/reconciler
[ -f /var/lib/reconciler/health.txt ] || echo ok >/var/lib/reconciler/health.txt
[ -f "$conf" ] && cp -p "$conf" "$conf.previous"
put "$conf" "$2" || true
[ -e "/etc/apache2/sites-enabled/reconciler-$1.conf" ] || a2ensite -q "reconciler-$1" >/dev/null
# Debian's stock site comes first and would answer requests meant for this one.
stock=no
if [ -e /etc/apache2/sites-enabled/000-default.conf ]; then
    a2dissite -q 000-default >/dev/null
    stock=yes
fi
if ! apachectl configtest 2>&1; then
    if [ -f "$conf.previous" ]; then
        mv -f "$conf.previous" "$conf"
    else
        a2dissite -q "reconciler-$1" >/dev/null || true
        rm -f "$conf"
    fi
    [ "$stock" = no ] || a2ensite -q 000-default >/dev/null
    echo "apachectl configtest refused the site; the previous configuration was put back"
    exit 1
fi
rm -f "$conf.previous"
reload_site apache2 "$conf" "$applied"
