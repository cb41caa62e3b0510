@replay
Feature: A finished run replays to exactly what users saw
  A run's log is the only source of truth. Rebuilding a finished run from its
  log alone must give the very run view users saw, and asking the engine to
  make every decision again must give the same decisions, for every kind of step.

  @smoke
  Scenario: An order synced to the order service replays exactly
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And replaying the run gives exactly the run view users saw
    And every decision re-made during replay matches the log

  Scenario: A pure transformation replays to the same output
    Given the project "acme" with the workflow "invoice-totals":
      | step | type      | does                                                               | then |
      | sum  | transform | {order: order.id, total: order.sum, customer: order.customer.name} | done |
      | done | terminate | succeeded                                                          |      |
    When "acme" delivers an order webhook to "invoice-totals"
    Then the output of "sum" is:
      """json
      { "order": "A-1001", "total": 42.5, "customer": "Ada Lovelace" }
      """
    And replaying the run gives exactly the run view users saw
    And every decision re-made during replay matches the log

  @smoke
  Scenario Outline: An order worth <amount> takes the <side> side of the branch and replays that way
    Given the project "acme" with the workflow "order-review":
      | step    | type      | does                              | then                 |
      | map     | transform | {id: order.id, total: order.sum}  | check                |
      | check   | branch    | when the total of map is over 100 | review, else approve |
      | review  | terminate | succeeded                         |                      |
      | approve | terminate | succeeded                         |                      |
    When "acme" delivers an order worth <amount> to "order-review"
    Then the run went through "<taken>"
    And the run did not go through "<skipped>"
    And replaying the run gives exactly the run view users saw
    And every decision re-made during replay matches the log

    Examples:
      | amount | side | taken   | skipped |
      | 250.00 | then | review  | approve |
      | 42.50  | else | approve | review  |

  Scenario: A run that waited an hour replays with its timer
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    When "acme" delivers an order webhook to "order-follow-up"
    And the run is waiting in "wait"
    And the clock moves forward 1 hour
    Then the run succeeds
    And replaying the run gives exactly the run view users saw
    And every decision re-made during replay matches the log

  Scenario: An hour that passes just after a big order arrives fires its review timer once
    Given the project "acme" with the workflow "big-order":
      | step  | type      | does                              | then            |
      | map   | transform | {id: order.id, total: order.sum}  | check           |
      | check | branch    | when the total of map is over 100 | wait, else push |
      | wait  | delay     | wait 1 hour                       | push            |
      | push  | http_call | POST the mapped order to /orders  | done            |
      | done  | terminate | succeeded                         |                 |
    When "acme" delivers an order worth 250.00 to "big-order"
    And the clock moves forward 1 hour
    Then the run succeeds with the timer of "wait" fired once
    And the run replays exactly from its log

  Scenario Outline: A run that ends <status> by design replays to that end
    Given the project "acme" with the workflow "fraud-check":
      | step  | type      | does                             | then |
      | score | transform | {id: order.id, risky: `<risky>`} | stop |
      | stop  | terminate | <ending>                         |      |
    When "acme" delivers an order webhook to "fraud-check"
    Then the run <outcome>
    And replaying the run gives exactly the run view users saw
    And every decision re-made during replay matches the log

    Examples:
      | status    | risky | ending                             | outcome  |
      | succeeded | false | succeeded                          | succeeds |
      | failed    | true  | failed: the order looks fraudulent | fails    |

  Scenario: A call the order service refuses fails the run, and replays to that failure
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |
    And the order service answers every order with 422
    When "acme" delivers an order webhook to "order-sync"
    Then the run fails because "was refused: HTTP 422"
    And replaying the run gives exactly the run view users saw
    And every decision re-made during replay matches the log
