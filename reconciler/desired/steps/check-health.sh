# check-health PORT PATH SECONDS: the health path must answer 2xx or 3xx on 127.0.0.1 within SECONDS.
command -v curl >/dev/null || apt-get -q -y --no-install-recommends install curl
url="http://127.0.0.1:$1$2"
waited=0
while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url") || code=000
    case "$code" in
    2?? | 3??)
        echo "$url answered $code"
        exit 0
        ;;
    esac
    if [ "$waited" -ge "$3" ]; then
        [ "$code" = 000 ] && code="no answer"
        echo "$url: $code after $3 s; it must answer 2xx or 3xx"
        exit 1
    fi
    sleep 2
    waited=$((waited + 2))
done
