@bad-input
Feature: Hostile requests are refused plainly and change nothing
  The webhook intake faces the internet. Whatever an unauthenticated sender
  puts in a path, a header or a body — database commands, line breaks that would forge a log
  line, NUL bytes, terminal escapes, markup, ten kilobytes where a name
  belongs — is data: it gets a JSON answer with a code a sender can act on, it
  writes nothing, it reveals nothing about which projects exist, and the next
  honest webhook runs as usual.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |

  Scenario Outline: A webhook <problem> is refused and writes nothing
    When a webhook <problem> is sent to "order-sync" of "acme"
    Then it is refused with <status> "<code>"
    And nothing was recorded
    And a correct webhook sent afterwards still runs to success

    Examples:
      | problem                                          | status | code                   |
      | for a project whose name is a database command   | 400    | bad_path               |
      | for a project with a 10 kB name                  | 400    | bad_path               |
      | for a workflow whose name holds a line break     | 400    | bad_path               |
      | for a workflow whose name holds a NUL            | 400    | bad_path               |
      | for a workflow whose name holds terminal escapes | 400    | bad_path               |
      | with a delivery id holding markup and quotes     | 400    | missing_delivery_id    |
      | with a 10 kB delivery id                         | 400    | missing_delivery_id    |
      | with a 10 kB signature                           | 401    | bad_signature          |
      | declared as Latin-1 instead of UTF-8             | 415    | unsupported_media_type |
      | whose order holds a NUL character                | 400    | malformed_body         |

  Scenario: An order full of database commands, markup and control characters is only data
    When "acme" delivers this webhook to "order-sync":
      """
      {"order": {"id": "A-1001'; DROP TABLE runs; --", "sum": 42.5, "note": "<script>alert(1)</script>\u001b[2J\u0007 end"}}
      """
    Then the run succeeds
    And the run replays exactly from its log
